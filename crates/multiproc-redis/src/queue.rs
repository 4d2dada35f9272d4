//! [`RemoteQueue`], [`RemoteJoinableQueue`] and their builder.

use crate::error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, RemoteError,
    TaskDoneError, TryGetError, TryPutError,
};
use crate::link::{GiveUp, Link, MIN_IO_WAIT};
use crate::scripts::Scripts;
use crate::{DeadLetter, DeadReason};
use multiproc_core::{Codec, CodecError};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default key prefix: every key of a queue named `jobs` starts with
/// `multiproc:{jobs}:`.
pub const DEFAULT_PREFIX: &str = "multiproc:";
/// Default limit on one message: 512 MiB, the server's default limit on a
/// bulk string (`proto-max-bulk-len`).
pub const DEFAULT_MAX_MESSAGE: u64 = 512 << 20;
/// Largest message limit a queue can be configured with (1 GiB, the
/// codec's default limit).
pub const MAX_MESSAGE_LIMIT: u64 = 1 << 30;
/// Longest queue name.
pub const MAX_NAME_LEN: usize = 200;
/// The consumer group every handle of a queue reads in.
const GROUP: &str = "multiproc";

/// First pause of a put waiting for room, or a join waiting for tasks; it
/// doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(1);
/// Longest pause of a put waiting for room or a join waiting for tasks.
const MAX_POLL: Duration = Duration::from_millis(50);

/// The configuration of a [`RemoteQueue`]: `RemoteQueue::builder(url,
/// name)`, then the settings, then [`build`](Self::build) or
/// [`build_joinable`](Self::build_joinable).
///
/// ```no_run
/// use multiproc_redis::RemoteQueue;
/// use std::time::Duration;
///
/// let q: RemoteQueue<String> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "jobs")
///     .prefix("myapp:")
///     .maxsize(10_000)
///     .min_idle(Duration::from_secs(60))
///     .max_deliveries(3)
///     .build()?;
/// # Ok::<(), multiproc_redis::RemoteError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RemoteQueueBuilder {
    url: String,
    name: String,
    prefix: String,
    maxsize: Option<u64>,
    min_idle: Duration,
    max_deliveries: u32,
    block: Duration,
    connect_timeout: Duration,
    io_timeout: Duration,
    retry_for: Duration,
    max_message: u64,
    consumer: Option<String>,
}

impl RemoteQueueBuilder {
    fn new(url: &str, name: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: name.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            maxsize: None,
            min_idle: Duration::from_secs(30),
            max_deliveries: 5,
            block: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(5),
            max_message: DEFAULT_MAX_MESSAGE,
            consumer: None,
        }
    }

    /// The namespace: every key of the queue starts with `prefix`, then the
    /// queue's name in braces (one cluster hash slot). Default
    /// [`DEFAULT_PREFIX`].
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Bounds the messages in the queue (Python's `maxsize`): a put waits
    /// while the stream holds `maxsize` messages not yet acknowledged
    /// (waiting, or delivered and not acknowledged). Default: unbounded.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = Some(maxsize as u64);
        self
    }

    /// How long a delivered message stays unacknowledged before another
    /// consumer may take it over (`XAUTOCLAIM`'s minimum idle time):
    /// longer than a consumer ever takes between its get and its
    /// acknowledgement (for the joinable queue, `task_done`). Default 30 s.
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// How many times a message is delivered at most; a message whose
    /// consumers died that many times is moved to the dead-letter stream
    /// instead of a further delivery. Default 5.
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Longest single server-side wait (`XREADGROUP BLOCK`) of a blocking
    /// get: a get looks for messages to take over, for a close and for a
    /// dead server at least this often. Default 1 s.
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// Longest wait for one connection attempt. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for the server's reply to one command (beyond the
    /// command's own blocking time). Default 5 s.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// How long an operation without a deadline keeps trying to reach a
    /// server that does not answer (reconnecting with back-off from 5 ms to
    /// 500 ms) before it fails with [`RemoteError::Unavailable`]. Default
    /// 5 s.
    pub fn retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Largest message, in bytes (encoded, for typed puts). Default
    /// [`DEFAULT_MAX_MESSAGE`], at most [`MAX_MESSAGE_LIMIT`].
    pub fn max_message(mut self, bytes: u64) -> Self {
        self.max_message = bytes;
        self
    }

    /// The consumer name of the built handle in the group (its clones get
    /// generated ones). Default: `host-pid-random`, unique per handle.
    pub fn consumer_name(mut self, name: &str) -> Self {
        self.consumer = Some(name.to_owned());
        self
    }

    /// Connects, creates the stream and its consumer group if they do not
    /// exist, and returns the handle.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Url`] or [`RemoteError::InvalidConfig`] for bad
    /// settings, [`RemoteError::Unavailable`] when the server cannot be
    /// reached within [`retry_for`](Self::retry_for),
    /// [`RemoteError::Server`] when it refuses (e.g. the key holds
    /// something else).
    pub fn build<T>(self) -> Result<RemoteQueue<T>, RemoteError> {
        self.build_with(true)
    }

    /// As [`build`](Self::build), for a [`RemoteJoinableQueue`]: gets do
    /// not acknowledge, `task_done` does.
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub fn build_joinable<T>(self) -> Result<RemoteJoinableQueue<T>, RemoteError> {
        Ok(RemoteJoinableQueue {
            queue: self.build_with(false)?,
        })
    }

    fn build_with<T>(self, ack_on_get: bool) -> Result<RemoteQueue<T>, RemoteError> {
        validate_name(&self.name)?;
        if self.prefix.len() > MAX_NAME_LEN || self.prefix.contains(['{', '}']) {
            return Err(RemoteError::InvalidConfig(
                "the prefix must be at most 200 bytes without braces",
            ));
        }
        if self.min_idle < Duration::from_millis(1) {
            return Err(RemoteError::InvalidConfig("min_idle must be at least 1 ms"));
        }
        if self.max_deliveries == 0 {
            return Err(RemoteError::InvalidConfig(
                "max_deliveries must be at least 1",
            ));
        }
        if self.block < Duration::from_millis(1) {
            return Err(RemoteError::InvalidConfig("block must be at least 1 ms"));
        }
        for t in [self.connect_timeout, self.io_timeout] {
            if t < Duration::from_millis(1) {
                return Err(RemoteError::InvalidConfig("timeouts must be at least 1 ms"));
            }
        }
        if self.max_message == 0 || self.max_message > MAX_MESSAGE_LIMIT {
            return Err(RemoteError::InvalidConfig(
                "max_message must be between 1 and 1 GiB",
            ));
        }
        if self.maxsize == Some(0) {
            return Err(RemoteError::InvalidConfig("maxsize must be at least 1"));
        }
        if let Some(c) = &self.consumer {
            validate_name(c)?;
        }
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|source| RemoteError::Url { source })?;
        // Replies are parsed in their RESP2 shapes, whatever the URL asks.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP2);
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|source| RemoteError::Url { source })?;
        let base = format!("{}{{{}}}:", self.prefix, self.name);
        let shared = Arc::new(Shared {
            client,
            stream: format!("{base}stream"),
            closed: format!("{base}closed"),
            dead: format!("{base}dead"),
            name: self.name,
            maxsize: self.maxsize.unwrap_or(0),
            min_idle: self.min_idle,
            max_deliveries: self.max_deliveries,
            block: self.block,
            connect_timeout: self.connect_timeout,
            io_timeout: self.io_timeout,
            retry_for: self.retry_for,
            max_message: self.max_message,
            codec: Codec::new().with_max_size(usize::try_from(self.max_message).unwrap_or(1 << 30)),
            ack_on_get,
            scripts: Scripts::new(),
        });
        let queue = RemoteQueue::with_shared(shared, self.consumer);
        {
            let mut link = queue.link();
            let give_up = GiveUp::At(Instant::now() + queue.shared.retry_for);
            queue.shared.create_group(&mut link, give_up)?;
        }
        Ok(queue)
    }
}

fn validate_name(name: &str) -> Result<(), RemoteError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::InvalidConfig(
            "names are 1 to 200 bytes of letters, digits, '_', '-', '.' and ':'",
        ))
    }
}

/// What every handle of one queue shares.
struct Shared {
    client: Client,
    stream: String,
    closed: String,
    dead: String,
    name: String,
    /// 0: unbounded.
    maxsize: u64,
    min_idle: Duration,
    max_deliveries: u32,
    block: Duration,
    connect_timeout: Duration,
    io_timeout: Duration,
    retry_for: Duration,
    max_message: u64,
    codec: Codec,
    ack_on_get: bool,
    scripts: Scripts,
}

impl Shared {
    fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.io_timeout)
    }

    /// The read timeout of an ordinary command under `deadline`.
    fn io_wait(&self, deadline: Option<Instant>) -> Duration {
        match deadline {
            None => self.io_timeout,
            Some(d) => self
                .io_timeout
                .min(d.saturating_duration_since(Instant::now()).max(MIN_IO_WAIT)),
        }
    }

    /// Where an operation with `deadline` stops reconnecting.
    fn give_up(&self, deadline: Option<Instant>) -> GiveUp {
        let budget = Instant::now() + self.retry_for;
        GiveUp::At(deadline.map_or(budget, |d| d.min(budget)))
    }

    fn create_group(&self, link: &mut Link, give_up: GiveUp) -> Result<(), RemoteError> {
        let created = link.call(
            &self.client,
            self.timeouts(),
            give_up,
            self.io_timeout,
            |con| {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query::<()>(con)
            },
        );
        match created {
            Err(RemoteError::Server { source }) if source.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Runs a command that needs the consumer group, creating the group
    /// once if the server lost it (a restart without persistence).
    fn with_group<R>(
        &self,
        link: &mut Link,
        give_up: GiveUp,
        read_timeout: Duration,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, RemoteError> {
        match link.call(&self.client, self.timeouts(), give_up, read_timeout, &f) {
            Err(RemoteError::Server { source }) if is_nogroup(&source) => {
                self.create_group(link, give_up)?;
                link.call(&self.client, self.timeouts(), give_up, read_timeout, &f)
            }
            other => other,
        }
    }
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.detail().is_some_and(|d| d.contains("NOGROUP"))
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Not for room or messages (network waits still have their timeouts).
    Never,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Self::Until(d) => Some(d),
            _ => None,
        }
    }
}

enum SendFail {
    Full,
    Closed,
    Timeout,
    Failed(RemoteError),
}

enum RecvFail {
    Empty,
    Closed,
    Failed(RemoteError),
}

/// A message taken from the stream and not yet acknowledged.
struct Delivery {
    id: String,
    deliveries: u64,
    payload: Vec<u8>,
}

struct Getter {
    link: Link,
    /// Where the next `XAUTOCLAIM` step starts.
    cursor: String,
}

/// A queue in a Redis stream: [`multiproc_queue::Queue`]'s API between
/// processes on any machines that reach the server. See the
/// [crate docs](crate) for the mapping to stream commands and what is
/// promised.
///
/// A handle is one consumer in the queue's consumer group, with its own
/// connections (one for puts and bookkeeping, one for gets, each made when
/// first needed). Clones are new consumers with their own connections;
/// give each thread or process that gets its own handle, since gets on
/// one handle take turns.
///
/// [`multiproc_queue::Queue`]: https://docs.rs/multiproc-queue
pub struct RemoteQueue<T> {
    shared: Arc<Shared>,
    consumer: String,
    link: Mutex<Link>,
    getter: Mutex<Getter>,
    /// Ids of messages got and not finished (joinable queues only), oldest
    /// first.
    outstanding: Mutex<VecDeque<String>>,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T> Clone for RemoteQueue<T> {
    fn clone(&self) -> Self {
        Self::with_shared(Arc::clone(&self.shared), None)
    }
}

impl<T> fmt::Debug for RemoteQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteQueue")
            .field("stream", &self.shared.stream)
            .field("consumer", &self.consumer)
            .field("maxsize", &self.maxsize())
            .finish_non_exhaustive()
    }
}

fn lock<G>(m: &Mutex<G>) -> MutexGuard<'_, G> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn generated_consumer_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(64)
        .collect();
    let nonce = getrandom::u64().unwrap_or_else(|_| {
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
    });
    format!(
        "{host}-{}-{}-{nonce:016x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl RemoteQueue<()> {
    /// The builder for a queue named `name` on the server at `url`
    /// (`redis://[user:password@]host[:port][/db]`, or
    /// `redis+unix:///path`); the element type is chosen by
    /// [`build`](RemoteQueueBuilder::build).
    pub fn builder(url: &str, name: &str) -> RemoteQueueBuilder {
        RemoteQueueBuilder::new(url, name)
    }
}

impl<T> RemoteQueue<T> {
    /// The queue named `name` on the server at `url`, with the default
    /// settings (unbounded).
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueueBuilder::build`].
    pub fn open(url: &str, name: &str) -> Result<Self, RemoteError> {
        RemoteQueue::builder(url, name).build()
    }

    fn with_shared(shared: Arc<Shared>, consumer: Option<String>) -> Self {
        Self {
            shared,
            consumer: consumer.unwrap_or_else(generated_consumer_name),
            link: Mutex::new(Link::new()),
            getter: Mutex::new(Getter {
                link: Link::new(),
                cursor: "0-0".to_owned(),
            }),
            outstanding: Mutex::new(VecDeque::new()),
            _marker: PhantomData,
        }
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        lock(&self.link)
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

    /// The key of the queue's dead-letter stream.
    #[must_use]
    pub fn dead_letter_key(&self) -> &str {
        &self.shared.dead
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
    fn control<R>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, RemoteError> {
        let s = &self.shared;
        s.with_group(&mut self.link(), s.give_up(None), s.io_timeout, f)
    }

    /// Messages in the stream not yet acknowledged: waiting ones, and
    /// delivered ones whose consumer has not acknowledged them (for a
    /// joinable queue: not called `task_done` for), including those held
    /// by a consumer that died until they are re-delivered and
    /// acknowledged or dead-lettered. This is what
    /// [`maxsize`](RemoteQueueBuilder::maxsize) bounds.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub fn qsize(&self) -> Result<usize, RemoteError> {
        let n: u64 = self.control(|con| redis::cmd("XLEN").arg(&self.shared.stream).query(con))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether [`qsize`](Self::qsize) is 0.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> Result<bool, RemoteError> {
        Ok(self.qsize()? == 0)
    }

    /// Closes the queue for every handle everywhere: puts fail with
    /// `Closed`; gets deliver what is left and then fail with `Closed`
    /// once every message has been acknowledged (a message held by a
    /// consumer that dies can still come back until then). Blocked gets
    /// notice within the [`block`](RemoteQueueBuilder::block) time.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn close(&self) -> Result<(), RemoteError> {
        self.control(|con| {
            redis::cmd("SET")
                .arg(&self.shared.closed)
                .arg(1)
                .query::<()>(con)
        })
    }

    /// Whether the queue was closed.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub fn is_closed(&self) -> Result<bool, RemoteError> {
        self.control(|con| redis::cmd("EXISTS").arg(&self.shared.closed).query(con))
    }

    /// Deletes the queue's keys (stream, consumer group, dead letters,
    /// closed flag) on the server. Handles that use it afterwards find an
    /// empty, open queue.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn destroy(&self) -> Result<(), RemoteError> {
        let s = &self.shared;
        self.control(|con| {
            redis::cmd("DEL")
                .arg(&s.stream)
                .arg(&s.closed)
                .arg(&s.dead)
                .query::<()>(con)
        })
    }

    /// Messages in the dead-letter stream.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub fn dead_letter_count(&self) -> Result<usize, RemoteError> {
        let n: u64 = self.control(|con| redis::cmd("XLEN").arg(&self.shared.dead).query(con))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Removes the oldest dead letter and returns it; `None` when there is
    /// none.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached, or the entry is not a dead letter
    /// this crate wrote ([`RemoteError::Protocol`]; it is removed all the
    /// same).
    pub fn take_dead_letter(&self) -> Result<Option<DeadLetter>, RemoteError> {
        let s = &self.shared;
        let reply: Value = self.control(|con| s.scripts.take_dead.key(&s.dead).invoke(con))?;
        match reply {
            Value::Nil => Ok(None),
            entry => parse_dead_letter(entry).map(Some),
        }
    }

    /// The oldest `max` dead letters, left where they are.
    ///
    /// # Errors
    ///
    /// As for [`take_dead_letter`](Self::take_dead_letter).
    pub fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, RemoteError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = self.control(|con| {
            redis::cmd("XRANGE")
                .arg(&self.shared.dead)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(max)
                .query(con)
        })?;
        let Value::Array(entries) = reply else {
            return Err(RemoteError::protocol("XRANGE reply is not an array"));
        };
        if entries.len() > max {
            return Err(RemoteError::protocol("XRANGE returned more than asked"));
        }
        entries.into_iter().map(parse_dead_letter).collect()
    }

    // ---- puts ----

    fn send(&self, payload: &[u8], wait: Wait) -> Result<(), SendFail> {
        let s = &self.shared;
        if payload.len() as u64 > s.max_message {
            return Err(SendFail::Failed(RemoteError::TooLarge {
                len: payload.len() as u64,
                max: s.max_message,
            }));
        }
        let deadline = wait.deadline();
        let mut pause = FIRST_POLL;
        let mut link = self.link();
        loop {
            let put = link.call(
                &s.client,
                s.timeouts(),
                s.give_up(deadline),
                s.io_wait(deadline),
                |con| {
                    s.scripts
                        .put
                        .key(&s.stream)
                        .key(&s.closed)
                        .arg(s.maxsize)
                        .arg(payload)
                        .invoke::<i64>(con)
                },
            );
            match put.map_err(SendFail::Failed)? {
                1 => return Ok(()),
                -1 => return Err(SendFail::Closed),
                0 => {}
                _ => {
                    return Err(SendFail::Failed(RemoteError::protocol(
                        "put script answered out of range",
                    )));
                }
            }
            // Full: wait with back-off, without holding the connection.
            let sleep = match wait {
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
            drop(link);
            std::thread::sleep(sleep);
            pause = (pause * 2).min(MAX_POLL);
            link = self.link();
        }
    }

    /// Puts raw bytes, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// `Closed`, or `Failed` with [`RemoteError::TooLarge`] or a server
    /// failure (the bytes are handed back).
    pub fn put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), PutError<&'a [u8]>> {
        self.send(data, Wait::Forever).map_err(|e| match e {
            SendFail::Closed => PutError::Closed(data),
            SendFail::Failed(f) => PutError::Failed(data, f),
            SendFail::Full | SendFail::Timeout => unreachable!("a blocking put waits for room"),
        })
    }

    /// Puts raw bytes if there is room now.
    ///
    /// # Errors
    ///
    /// `Full`, `Closed`, or `Failed`.
    pub fn try_put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), TryPutError<&'a [u8]>> {
        self.send(data, Wait::Never).map_err(|e| match e {
            SendFail::Full | SendFail::Timeout => TryPutError::Full(data),
            SendFail::Closed => TryPutError::Closed(data),
            SendFail::Failed(f) => TryPutError::Failed(data, f),
        })
    }

    /// Puts raw bytes, waiting at most `timeout` for room (and for the
    /// server: a server that cannot be reached fails the put by then).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed`, or `Failed`.
    pub fn put_bytes_timeout<'a>(
        &self,
        data: &'a [u8],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'a [u8]>> {
        self.send(data, Wait::after(timeout)).map_err(|e| match e {
            SendFail::Full | SendFail::Timeout => PutTimeoutError::Timeout(data),
            SendFail::Closed => PutTimeoutError::Closed(data),
            SendFail::Failed(f) => PutTimeoutError::Failed(data, f),
        })
    }

    // ---- gets ----

    fn receive(&self, wait: Wait) -> Result<Delivery, RecvFail> {
        let s = &self.shared;
        let deadline = wait.deadline();
        let mut getter = lock(&self.getter);
        let getter = &mut *getter;
        // Since when the server has been out of reach, if it is.
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
            let step = self.take_step(getter, give_up, deadline);
            let outcome = match (step, give_up) {
                (Err(e), GiveUp::At(limit)) if e.is_unavailable() => {
                    failing_since.get_or_insert_with(Instant::now);
                    if Instant::now() >= limit {
                        return Err(RecvFail::Failed(e));
                    }
                    // The next turn reconnects, with back-off.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                (other, _) => other.map_err(RecvFail::Failed)?,
            };
            failing_since = None;
            match outcome {
                Taken::Message(d) => return Ok(d),
                Taken::Closed => return Err(RecvFail::Closed),
                Taken::Empty => {}
            }
            // Nothing now: wait on the server, a slice at a time.
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
            match self.block_read(getter, give_up, block, deadline) {
                Ok(Some(d)) => return Ok(d),
                Ok(None) => {}
                Err(e) if e.is_unavailable() => {
                    failing_since.get_or_insert_with(Instant::now);
                }
                Err(e) => return Err(RecvFail::Failed(e)),
            }
        }
    }

    /// The non-blocking part of a get: take over an idle message, or take
    /// a new one, or learn that the queue is closed and drained.
    fn take_step(
        &self,
        getter: &mut Getter,
        give_up: GiveUp,
        deadline: Option<Instant>,
    ) -> Result<Taken, RemoteError> {
        let s = &self.shared;
        let min_idle = u64::try_from(s.min_idle.as_millis()).unwrap_or(u64::MAX);
        let cursor = getter.cursor.clone();
        let reply: Value = s.with_group(&mut getter.link, give_up, s.io_wait(deadline), |con| {
            s.scripts
                .take
                .key(&s.stream)
                .key(&s.closed)
                .key(&s.dead)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(min_idle)
                .arg(s.max_deliveries)
                .arg(&cursor)
                .invoke(con)
        })?;
        let Value::Array(parts) = reply else {
            return Err(RemoteError::protocol("take script reply is not an array"));
        };
        let mut parts = parts.into_iter();
        let kind = parts.next().and_then(into_bytes);
        let next = parts.next().and_then(into_bytes);
        let (Some(kind), Some(next)) = (kind, next) else {
            return Err(RemoteError::protocol("take script reply is too short"));
        };
        getter.cursor = String::from_utf8(next)
            .map_err(|_| RemoteError::protocol("stream cursor is not text"))?;
        match kind.as_slice() {
            b"closed" => Ok(Taken::Closed),
            b"empty" => Ok(Taken::Empty),
            b"claimed" | b"new" => {
                let id = parts.next().and_then(into_bytes);
                let count = parts.next();
                let fields = parts.next();
                let (Some(id), Some(Value::Int(count)), Some(Value::Array(fields))) =
                    (id, count, fields)
                else {
                    return Err(RemoteError::protocol("take script entry is malformed"));
                };
                let id = String::from_utf8(id)
                    .map_err(|_| RemoteError::protocol("stream id is not text"))?;
                let deliveries = u64::try_from(count).unwrap_or(1);
                self.accept(getter, id, deliveries, fields)
                    .map(Taken::Message)
            }
            _ => Err(RemoteError::protocol(
                "take script answered an unknown kind",
            )),
        }
    }

    /// `XREADGROUP … BLOCK`: waits on the server for a new message.
    fn block_read(
        &self,
        getter: &mut Getter,
        give_up: GiveUp,
        block: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Delivery>, RemoteError> {
        let s = &self.shared;
        let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let read_timeout = block + s.io_wait(deadline);
        let reply: Value = s.with_group(&mut getter.link, give_up, read_timeout, |con| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(ms)
                .arg("STREAMS")
                .arg(&s.stream)
                .arg(">")
                .query(con)
        })?;
        // Nil, or [[stream, [[id, fields]]]].
        let entry = match reply {
            Value::Nil => return Ok(None),
            Value::Array(streams) => streams
                .into_iter()
                .next()
                .and_then(|st| match st {
                    Value::Array(pair) => pair.into_iter().nth(1),
                    _ => None,
                })
                .and_then(|entries| match entries {
                    Value::Array(entries) => entries.into_iter().next(),
                    _ => None,
                }),
            _ => None,
        };
        let Some(Value::Array(entry)) = entry else {
            return Err(RemoteError::protocol("XREADGROUP reply is malformed"));
        };
        let mut entry = entry.into_iter();
        let (Some(id), Some(Value::Array(fields))) =
            (entry.next().and_then(into_bytes), entry.next())
        else {
            return Err(RemoteError::protocol("stream entry is malformed"));
        };
        let id =
            String::from_utf8(id).map_err(|_| RemoteError::protocol("stream id is not text"))?;
        self.accept(getter, id, 1, fields).map(Some)
    }

    /// Checks a delivered entry: one with no payload field, or a payload
    /// over the limit, goes to the dead-letter stream.
    fn accept(
        &self,
        getter: &mut Getter,
        id: String,
        deliveries: u64,
        fields: Vec<Value>,
    ) -> Result<Delivery, RemoteError> {
        let max = self.shared.max_message;
        match payload_field(fields) {
            None => {
                self.dead_letter(&mut getter.link, &id, deliveries, DeadReason::Malformed);
                Err(RemoteError::protocol(
                    "stream entry has no payload field (moved to the dead letters)",
                ))
            }
            Some(p) if p.len() as u64 > max => {
                self.dead_letter(&mut getter.link, &id, deliveries, DeadReason::TooLarge);
                Err(RemoteError::TooLarge {
                    len: p.len() as u64,
                    max,
                })
            }
            Some(payload) => Ok(Delivery {
                id,
                deliveries,
                payload,
            }),
        }
    }

    /// Moves a message this handle holds to the dead letters; best effort
    /// (if the server is gone the message stays pending, comes back, and
    /// ends there after its last delivery).
    fn dead_letter(&self, link: &mut Link, id: &str, deliveries: u64, reason: DeadReason) {
        let s = &self.shared;
        let _ = link.call(&s.client, s.timeouts(), GiveUp::Once, s.io_timeout, |con| {
            s.scripts
                .dead
                .key(&s.stream)
                .key(&s.dead)
                .arg(GROUP)
                .arg(id)
                .arg(deliveries)
                .arg(reason.as_str())
                .invoke::<i64>(con)
        });
    }

    /// Acknowledges and deletes message `id`.
    fn ack(&self, link: &mut Link, id: &str, deadline: Option<Instant>) -> Result<(), RemoteError> {
        let s = &self.shared;
        link.call(
            &s.client,
            s.timeouts(),
            s.give_up(deadline),
            s.io_wait(deadline),
            |con| {
                s.scripts
                    .ack
                    .key(&s.stream)
                    .arg(GROUP)
                    .arg(id)
                    .invoke::<i64>(con)
            },
        )
        .map(drop)
    }

    /// After a get handed a message out (or is about to): the plain queue
    /// acknowledges it now, the joinable one remembers it for `task_done`.
    fn finish(&self, delivery: &Delivery, wait: Wait) -> Result<(), RemoteError> {
        if self.shared.ack_on_get {
            let mut getter = lock(&self.getter);
            self.ack(&mut getter.link, &delivery.id, wait.deadline())
        } else {
            lock(&self.outstanding).push_back(delivery.id.clone());
            Ok(())
        }
    }

    fn get_bytes_with(&self, wait: Wait) -> Result<Vec<u8>, RecvFail> {
        let delivery = self.receive(wait)?;
        self.finish(&delivery, wait).map_err(RecvFail::Failed)?;
        Ok(delivery.payload)
    }

    /// Gets raw bytes, waiting for a message.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and drained; `Failed` when the
    /// server stays out of reach for [`retry_for`](RemoteQueueBuilder::retry_for)
    /// or a message is malformed.
    pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_bytes_with(Wait::Forever).map_err(|e| match e {
            RecvFail::Closed => GetError::Closed,
            RecvFail::Failed(f) => GetError::Failed(f),
            RecvFail::Empty => unreachable!("a blocking get waits for a message"),
        })
    }

    /// Gets raw bytes if a message is there now.
    ///
    /// # Errors
    ///
    /// `Empty`, `Closed` or `Failed`.
    pub fn try_get_bytes(&self) -> Result<Vec<u8>, TryGetError> {
        self.get_bytes_with(Wait::Never).map_err(|e| match e {
            RecvFail::Empty => TryGetError::Empty,
            RecvFail::Closed => TryGetError::Closed,
            RecvFail::Failed(f) => TryGetError::Failed(f),
        })
    }

    /// Gets raw bytes, waiting at most `timeout` (for a message, and for
    /// the server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_bytes_with(Wait::after(timeout))
            .map_err(|e| match e {
                RecvFail::Empty => GetTimeoutError::Timeout,
                RecvFail::Closed => GetTimeoutError::Closed,
                RecvFail::Failed(f) => GetTimeoutError::Failed(f),
            })
    }
}

enum Taken {
    Message(Delivery),
    Closed,
    Empty,
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The value of field `d` among an entry's `[field, value, …]`.
fn payload_field(fields: Vec<Value>) -> Option<Vec<u8>> {
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if matches!(&k, Value::BulkString(k) if k == b"d") {
            return into_bytes(v);
        }
    }
    None
}

/// A dead-letter entry, `[id, [field, value, …]]`.
fn parse_dead_letter(entry: Value) -> Result<DeadLetter, RemoteError> {
    let bad = || RemoteError::protocol("dead-letter entry is malformed");
    let Value::Array(entry) = entry else {
        return Err(bad());
    };
    let mut entry = entry.into_iter();
    let (Some(_), Some(Value::Array(fields))) = (entry.next(), entry.next()) else {
        return Err(bad());
    };
    let (mut id, mut deliveries, mut reason, mut payload) = (None, None, None, None);
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let Some(k) = into_bytes(k) else {
            return Err(bad());
        };
        let v = into_bytes(v).ok_or_else(bad)?;
        match k.as_slice() {
            b"id" => id = Some(String::from_utf8(v).map_err(|_| bad())?),
            b"deliveries" => {
                let text = std::str::from_utf8(&v).map_err(|_| bad())?;
                deliveries = Some(text.parse::<u64>().map_err(|_| bad())?);
            }
            b"reason" => reason = Some(DeadReason::parse(&v).ok_or_else(bad)?),
            b"d" => payload = Some(v),
            _ => {}
        }
    }
    match (id, deliveries, reason, payload) {
        (Some(id), Some(deliveries), Some(reason), Some(payload)) => Ok(DeadLetter {
            id,
            deliveries,
            reason,
            payload,
        }),
        _ => Err(bad()),
    }
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    fn encode(&self, item: &T) -> Result<Vec<u8>, RemoteError> {
        self.shared.codec.encode(item).map_err(|e| match e {
            // Over the message limit: say by how much, as for bytes.
            CodecError::TooLarge { .. } => {
                match Codec::new().with_max_size(usize::MAX).encoded_len(item) {
                    Ok(len) => RemoteError::TooLarge {
                        len: len as u64,
                        max: self.shared.max_message,
                    },
                    Err(e) => RemoteError::Codec(e),
                }
            }
            e => RemoteError::Codec(e),
        })
    }

    /// Puts `item`, waiting while the queue is full (polling with back-off
    /// from 1 ms to 50 ms).
    ///
    /// # Errors
    ///
    /// `Closed`, or `Failed` (codec, size, server); the item is handed back.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        let bytes = match self.encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutError::Failed(item, e)),
        };
        self.put_bytes(&bytes).map_err(|e| e.with(item))
    }

    /// Puts `item` if there is room now.
    ///
    /// # Errors
    ///
    /// `Full`, `Closed` or `Failed`; the item is handed back.
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        let bytes = match self.encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(TryPutError::Failed(item, e)),
        };
        self.try_put_bytes(&bytes).map_err(|e| e.with(item))
    }

    /// Puts `item`, waiting at most `timeout` for room and for the server.
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`; the item is handed back.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        let bytes = match self.encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutTimeoutError::Failed(item, e)),
        };
        self.put_bytes_timeout(&bytes, timeout)
            .map_err(|e| e.with(item))
    }

    fn get_with(&self, wait: Wait) -> Result<T, RecvFail> {
        let delivery = self.receive(wait)?;
        match self.shared.codec.decode::<T>(&delivery.payload) {
            Ok(value) => {
                self.finish(&delivery, wait).map_err(RecvFail::Failed)?;
                Ok(value)
            }
            Err(e) => {
                let mut getter = lock(&self.getter);
                self.dead_letter(
                    &mut getter.link,
                    &delivery.id,
                    delivery.deliveries,
                    DeadReason::Undecodable,
                );
                Err(RecvFail::Failed(RemoteError::Codec(e)))
            }
        }
    }

    /// Gets an item, waiting for one.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and drained; `Failed` when the
    /// server stays out of reach for [`retry_for`](RemoteQueueBuilder::retry_for),
    /// or the message does not decode (it moves to the dead letters).
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::Forever).map_err(|e| match e {
            RecvFail::Closed => GetError::Closed,
            RecvFail::Failed(f) => GetError::Failed(f),
            RecvFail::Empty => unreachable!("a blocking get waits for a message"),
        })
    }

    /// Gets an item if one is there now.
    ///
    /// # Errors
    ///
    /// `Empty`, `Closed` or `Failed`.
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(Wait::Never).map_err(|e| match e {
            RecvFail::Empty => TryGetError::Empty,
            RecvFail::Closed => TryGetError::Closed,
            RecvFail::Failed(f) => TryGetError::Failed(f),
        })
    }

    /// Gets an item, waiting at most `timeout` (for an item, and for the
    /// server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(Wait::after(timeout)).map_err(|e| match e {
            RecvFail::Empty => GetTimeoutError::Timeout,
            RecvFail::Closed => GetTimeoutError::Closed,
            RecvFail::Failed(f) => GetTimeoutError::Failed(f),
        })
    }
}

impl<T> Drop for RemoteQueue<T> {
    /// Leaves the consumer group if this handle holds no pending message
    /// (best effort, only over a connection it already has, waiting at
    /// most 500 ms for the reply).
    fn drop(&mut self) {
        let s = &self.shared;
        let Ok(getter) = self.getter.get_mut() else {
            return;
        };
        if !getter.link.is_connected() {
            return;
        }
        let _ = getter.link.call(
            &s.client,
            s.timeouts(),
            GiveUp::Once,
            s.io_timeout.min(Duration::from_millis(500)),
            |con| {
                s.scripts
                    .forget
                    .key(&s.stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .invoke::<i64>(con)
            },
        );
        getter.link.disconnect();
    }
}

/// A [`RemoteQueue`] whose gets are acknowledged by
/// [`task_done`](Self::task_done), with [`join`](Self::join): Python's
/// `JoinableQueue` over a stream. It dereferences to the queue for puts,
/// gets and the rest.
///
/// A task is unfinished from its put until its `task_done`: the stream
/// holds it (delivered or not) until then, so [`qsize`](RemoteQueue::qsize)
/// counts unfinished tasks, `maxsize` bounds them, and `join` waits for
/// the count to reach 0. If a consumer dies before `task_done`, its tasks
/// are re-delivered to another consumer after the minimum idle time.
///
/// `task_done` acknowledges the oldest message this handle got and has not
/// finished: call it on the handle that got the item.
pub struct RemoteJoinableQueue<T> {
    queue: RemoteQueue<T>,
}

impl<T> Clone for RemoteJoinableQueue<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for RemoteJoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteJoinableQueue")
            .field(&self.queue)
            .finish()
    }
}

impl<T> Deref for RemoteJoinableQueue<T> {
    type Target = RemoteQueue<T>;
    fn deref(&self) -> &RemoteQueue<T> {
        &self.queue
    }
}

impl<T> RemoteJoinableQueue<T> {
    /// The joinable queue named `name` on the server at `url`, with the
    /// default settings.
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueueBuilder::build`].
    pub fn open(url: &str, name: &str) -> Result<Self, RemoteError> {
        RemoteQueue::builder(url, name).build_joinable()
    }

    /// Marks the oldest item this handle got and has not finished as done:
    /// acknowledges and deletes its message.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError::Unmatched`] when this handle holds no unfinished
    /// item; [`TaskDoneError::Failed`] when the server cannot be reached
    /// (the item stays unfinished).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let mut outstanding = lock(&self.queue.outstanding);
        let Some(id) = outstanding.front() else {
            return Err(TaskDoneError::Unmatched);
        };
        self.queue
            .ack(&mut self.queue.link(), id, None)
            .map_err(TaskDoneError::Failed)?;
        outstanding.pop_front();
        Ok(())
    }

    /// Items this handle got and has not called `task_done` for.
    #[must_use]
    pub fn held_tasks(&self) -> usize {
        lock(&self.queue.outstanding).len()
    }

    /// Unfinished tasks of the whole queue (every producer and consumer):
    /// [`qsize`](RemoteQueue::qsize).
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub fn unfinished_tasks(&self) -> Result<usize, RemoteError> {
        self.queue.qsize()
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<(), JoinTimeoutError> {
        let mut pause = FIRST_POLL;
        loop {
            if self.queue.qsize()? == 0 {
                return Ok(());
            }
            let sleep = match deadline {
                None => pause,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(JoinTimeoutError::Timeout);
                    }
                    pause.min(left)
                }
            };
            std::thread::sleep(sleep);
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Waits until every task put into the queue is done (polling with
    /// back-off from 1 ms to 50 ms). Dead-lettered messages count as done.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub fn join(&self) -> Result<(), RemoteError> {
        self.join_until(None).map_err(|e| match e {
            JoinTimeoutError::Failed(f) => f,
            JoinTimeoutError::Timeout => unreachable!("join has no deadline"),
        })
    }

    /// As [`join`](Self::join), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout` with tasks still unfinished; `Failed` when the server
    /// cannot be asked.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        self.join_until(Instant::now().checked_add(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<Q: Send + Sync>() {}
        check::<RemoteQueue<Vec<u8>>>();
        check::<RemoteJoinableQueue<String>>();
    }

    #[test]
    fn the_payload_is_field_d_wherever_it_is() {
        assert_eq!(
            payload_field(vec![bulk(b"d"), bulk(b"x")]),
            Some(b"x".to_vec())
        );
        assert_eq!(
            payload_field(vec![bulk(b"a"), bulk(b"1"), bulk(b"d"), bulk(b"")]),
            Some(Vec::new())
        );
        assert_eq!(payload_field(vec![bulk(b"a"), bulk(b"d")]), None);
        assert_eq!(
            payload_field(vec![bulk(b"d")]),
            None,
            "a field without value"
        );
        assert_eq!(payload_field(vec![bulk(b"d"), Value::Int(3)]), None);
        assert_eq!(payload_field(Vec::new()), None);
    }

    fn letter(fields: Vec<Value>) -> Value {
        Value::Array(vec![bulk(b"1-0"), Value::Array(fields)])
    }

    #[test]
    fn dead_letters_parse_or_give_a_protocol_error() {
        let good = letter(vec![
            bulk(b"id"),
            bulk(b"5-1"),
            bulk(b"deliveries"),
            bulk(b"3"),
            bulk(b"reason"),
            bulk(b"deliveries"),
            bulk(b"d"),
            bulk(b"pay"),
        ]);
        let l = parse_dead_letter(good).unwrap();
        assert_eq!(
            (l.id(), l.deliveries(), l.reason(), l.payload()),
            ("5-1", 3, DeadReason::TooManyDeliveries, &b"pay"[..])
        );
        let bad = [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![bulk(b"1-0")]),
            letter(vec![]),
            letter(vec![bulk(b"id"), bulk(b"5-1")]),
            letter(vec![
                bulk(b"id"),
                bulk(b"5-1"),
                bulk(b"deliveries"),
                bulk(b"99999999999999999999999"),
                bulk(b"reason"),
                bulk(b"codec"),
                bulk(b"d"),
                bulk(b""),
            ]),
            letter(vec![
                bulk(b"id"),
                bulk(b"5-1"),
                bulk(b"deliveries"),
                bulk(b"1"),
                bulk(b"reason"),
                bulk(b"bored"),
                bulk(b"d"),
                bulk(b""),
            ]),
            letter(vec![
                bulk(b"id"),
                bulk(&[0xff, 0xfe]),
                bulk(b"deliveries"),
                bulk(b"1"),
                bulk(b"reason"),
                bulk(b"codec"),
                bulk(b"d"),
                bulk(b""),
            ]),
            letter(vec![Value::Int(1), bulk(b"x")]),
        ];
        for v in bad {
            let shown = format!("{v:?}");
            let e = parse_dead_letter(v).unwrap_err();
            assert!(e.is_protocol(), "{shown}: {e:?}");
        }
    }

    #[test]
    fn reasons_round_trip_through_their_stored_names() {
        for r in [
            DeadReason::TooManyDeliveries,
            DeadReason::Undecodable,
            DeadReason::Malformed,
            DeadReason::TooLarge,
        ] {
            assert_eq!(DeadReason::parse(r.as_str().as_bytes()), Some(r));
        }
        assert_eq!(DeadReason::parse(b""), None);
    }

    #[test]
    fn names_and_settings_are_checked_before_any_network() {
        let url = "redis://127.0.0.1:1/0";
        for name in ["", "a b", "a{b}", "\u{e9}", &"n".repeat(MAX_NAME_LEN + 1)] {
            let e = RemoteQueue::builder(url, name).build::<u8>().unwrap_err();
            assert!(e.is_invalid_config(), "{name:?}: {e:?}");
        }
        let b = || RemoteQueue::builder(url, "q");
        let errors = [
            b().prefix("{x}").build::<u8>().unwrap_err(),
            b().min_idle(Duration::ZERO).build::<u8>().unwrap_err(),
            b().max_deliveries(0).build::<u8>().unwrap_err(),
            b().block(Duration::ZERO).build::<u8>().unwrap_err(),
            b().io_timeout(Duration::ZERO).build::<u8>().unwrap_err(),
            b().max_message(0).build::<u8>().unwrap_err(),
            b().max_message(MAX_MESSAGE_LIMIT + 1)
                .build::<u8>()
                .unwrap_err(),
            b().maxsize(0).build::<u8>().unwrap_err(),
            b().consumer_name("").build::<u8>().unwrap_err(),
            RemoteQueue::builder("http://x", "q")
                .build::<u8>()
                .unwrap_err(),
        ];
        for e in errors {
            assert!(e.is_invalid_config(), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn an_unreachable_server_is_unavailable_with_its_source() {
        // Port 1 on loopback: nothing listens there.
        let e = RemoteQueue::builder("redis://127.0.0.1:1/0", "q")
            .retry_for(Duration::from_millis(50))
            .build::<u8>()
            .unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert_eq!(e.to_string(), "redis server unavailable");
        assert!(std::error::Error::source(&e).is_some());
    }
}
