//! [`RemoteQueue`], [`RemoteJoinableQueue`] and their builder.

use crate::error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, RemoteError,
    TaskDoneError, TryGetError, TryPutError,
};
use crate::link::{GiveUp, Link, MIN_IO_WAIT};
use crate::parse::{
    self, Entry, PutReply, TakeReply, into_bytes, parse_dead_letter, payload_field,
};
use crate::scripts::Scripts;
use crate::{DeadLetter, DeadReason};
use multiproc_core::{Codec, CodecError};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, ScriptInvocation, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
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
/// Most messages one [`RemoteQueue::get_many`] returns, and the largest
/// [`read_ahead`](RemoteQueueBuilder::read_ahead).
pub const MAX_BATCH: usize = 65_536;
/// The consumer group every handle of a queue reads in.
pub(crate) const GROUP: &str = "multiproc";

/// First pause of a put waiting for room, or a join waiting for tasks; it
/// doubles up to [`MAX_POLL`].
pub(crate) const FIRST_POLL: Duration = Duration::from_millis(1);
/// Longest pause of a put waiting for room or a join waiting for tasks.
pub(crate) const MAX_POLL: Duration = Duration::from_millis(50);

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
    read_ahead: usize,
}

impl RemoteQueueBuilder {
    /// The same settings for the queue named `name`.
    pub(crate) fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The queue's name.
    pub(crate) fn queue_name(&self) -> &str {
        &self.name
    }

    /// `(block, min_idle, retry_for)`.
    pub(crate) fn waits(&self) -> (Duration, Duration, Duration) {
        (self.block, self.min_idle, self.retry_for)
    }

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
            read_ahead: 1,
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

    /// How many messages a get takes from the server at once (one
    /// `XREADGROUP COUNT n`, or one take-over step): the first is handed
    /// out, the others wait in the handle, still unacknowledged, and the
    /// next gets hand them out without a round trip. Default 1 (no
    /// read-ahead); at most [`MAX_BATCH`].
    ///
    /// A message read ahead stays pending for this consumer until a get
    /// hands it out (the plain queue then acknowledges it, the joinable one
    /// at `task_done`): if the process dies, every message it read ahead
    /// is re-delivered to another consumer after
    /// [`min_idle`](Self::min_idle), none lost. One that waited in the
    /// handle for half of `min_idle` is not handed out but given back to
    /// the group (so it is never delivered twice while nobody dies), and
    /// dropping the handle gives back what it holds. The price is
    /// balance: messages read ahead wait for this consumer while others
    /// may be idle, so keep it small when each message takes long.
    ///
    /// ```no_run
    /// use multiproc_redis::RemoteQueue;
    ///
    /// let q: RemoteQueue<u64> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "ticks")
    ///     .read_ahead(64)
    ///     .build()?;
    /// let first = q.get()?; // up to 64 taken, one handed out
    /// let second = q.get()?; // no round trip
    /// # let _ = (first, second);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_ahead(mut self, messages: usize) -> Self {
        self.read_ahead = messages;
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
        let (shared, consumer) = self.into_shared(ack_on_get)?;
        let queue = RemoteQueue::with_shared(shared, consumer);
        {
            let mut link = queue.link();
            let give_up = GiveUp::At(Instant::now() + queue.shared.retry_for);
            queue.shared.create_group(&mut link, give_up)?;
        }
        Ok(queue)
    }

    /// Checks the settings (before any network) and makes what every
    /// handle of the queue shares, and the first handle's consumer name
    /// if one was set.
    pub(crate) fn into_shared(
        self,
        ack_on_get: bool,
    ) -> Result<(Arc<Shared>, Option<String>), RemoteError> {
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
        if self.read_ahead == 0 || self.read_ahead > MAX_BATCH {
            return Err(RemoteError::InvalidConfig(
                "read_ahead must be between 1 and MAX_BATCH",
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
            read_ahead: self.read_ahead,
            scripts: Scripts::new(),
        });
        Ok((shared, self.consumer))
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

/// What every handle of one queue shares (blocking and async handles
/// alike: the same keys, settings and scripts).
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) stream: String,
    pub(crate) closed: String,
    pub(crate) dead: String,
    pub(crate) name: String,
    /// 0: unbounded.
    pub(crate) maxsize: u64,
    pub(crate) min_idle: Duration,
    max_deliveries: u32,
    pub(crate) block: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) retry_for: Duration,
    max_message: u64,
    pub(crate) codec: Codec,
    pub(crate) ack_on_get: bool,
    pub(crate) read_ahead: usize,
    scripts: Scripts,
}

impl Shared {
    fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.io_timeout)
    }

    /// The read timeout of an ordinary command under `deadline`.
    pub(crate) fn io_wait(&self, deadline: Option<Instant>) -> Duration {
        match deadline {
            None => self.io_timeout,
            Some(d) => self
                .io_timeout
                .min(d.saturating_duration_since(Instant::now()).max(MIN_IO_WAIT)),
        }
    }

    /// How often a get that keeps finding new messages still runs a
    /// take-over step: every `block`, at most a quarter of `min_idle`.
    pub(crate) fn scan_every(&self) -> Duration {
        self.block.min(self.min_idle / 4)
    }

    /// Where an operation with `deadline` stops reconnecting.
    pub(crate) fn give_up(&self, deadline: Option<Instant>) -> GiveUp {
        let budget = Instant::now() + self.retry_for;
        GiveUp::At(deadline.map_or(budget, |d| d.min(budget)))
    }

    /// `XGROUP CREATE stream GROUP 0 MKSTREAM`.
    pub(crate) fn create_group_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        cmd
    }

    /// The put script for `payloads`, adding their number to `counter` if
    /// given.
    pub(crate) fn put_script<B: AsRef<[u8]>>(
        &self,
        payloads: &[B],
        counter: Option<&str>,
    ) -> ScriptInvocation<'_> {
        let mut put = self.scripts.put.key(&self.stream);
        put.key(&self.closed);
        if let Some(counter) = counter {
            put.key(counter);
        }
        put.arg(self.maxsize);
        for p in payloads {
            put.arg(p.as_ref());
        }
        put
    }

    /// The take script: a take-over step from `cursor`, then new messages,
    /// up to `want` in all.
    pub(crate) fn take_script(
        &self,
        consumer: &str,
        cursor: &str,
        want: usize,
    ) -> ScriptInvocation<'_> {
        let min_idle = u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut take = self.scripts.take.key(&self.stream);
        take.key(&self.closed)
            .key(&self.dead)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle)
            .arg(self.max_deliveries)
            .arg(cursor)
            .arg(want);
        take
    }

    /// `XREADGROUP … COUNT want [BLOCK ms] STREAMS stream >`.
    pub(crate) fn read_cmd(
        &self,
        consumer: &str,
        want: usize,
        block: Option<Duration>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(want);
        if let Some(block) = block {
            let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(">");
        cmd
    }

    /// The acknowledge-and-delete script for `ids`.
    pub(crate) fn ack_script<S: AsRef<str>>(&self, ids: &[S]) -> ScriptInvocation<'_> {
        let mut ack = self.scripts.ack.key(&self.stream);
        ack.arg(GROUP);
        for id in ids {
            ack.arg(id.as_ref());
        }
        ack
    }

    /// The acknowledge-and-delete script for `ids` as one `EVAL` command
    /// (to send without waiting for its reply).
    pub(crate) fn ack_cmd<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(crate::scripts::ACK)
            .arg(1)
            .arg(&self.stream)
            .arg(GROUP);
        for id in ids {
            cmd.arg(id);
        }
        cmd
    }

    /// The script moving message `id` to the dead letters.
    pub(crate) fn dead_script(
        &self,
        id: &str,
        deliveries: u64,
        reason: DeadReason,
    ) -> ScriptInvocation<'_> {
        let mut dead = self.scripts.dead.key(&self.stream);
        dead.key(&self.dead)
            .arg(GROUP)
            .arg(id)
            .arg(deliveries)
            .arg(reason.as_str());
        dead
    }

    /// The script giving messages (id, delivery count) of `consumer` back
    /// to the group.
    pub(crate) fn release_script<'a>(
        &self,
        consumer: &str,
        messages: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> ScriptInvocation<'_> {
        let idle = u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut release = self.scripts.release.key(&self.stream);
        release.arg(GROUP).arg(consumer).arg(idle);
        for (id, deliveries) in messages {
            release.arg(id).arg(deliveries);
        }
        release
    }

    /// The script removing `consumer` from the group if it holds nothing.
    pub(crate) fn forget_script(&self, consumer: &str) -> ScriptInvocation<'_> {
        let mut forget = self.scripts.forget.key(&self.stream);
        forget.arg(GROUP).arg(consumer);
        forget
    }

    /// Checks a batch before it is sent: each message within the limit,
    /// the batch within `maxsize`. `Ok(false)`: the batch is empty.
    pub(crate) fn check_batch<B: AsRef<[u8]>>(&self, payloads: &[B]) -> Result<bool, SendFail> {
        for p in payloads {
            let len = p.as_ref().len() as u64;
            if len > self.max_message {
                return Err(SendFail::Failed(RemoteError::TooLarge {
                    len,
                    max: self.max_message,
                }));
            }
        }
        if payloads.is_empty() {
            return Ok(false);
        }
        if self.maxsize > 0 && payloads.len() as u64 > self.maxsize {
            return Err(SendFail::Failed(RemoteError::OverMaxsize {
                len: payloads.len() as u64,
                maxsize: self.maxsize,
            }));
        }
        Ok(true)
    }

    /// The payload of a delivered entry, or why it goes to the dead
    /// letters (no payload field, or over the limit) with the get's error.
    pub(crate) fn check_payload(
        &self,
        fields: Vec<Value>,
    ) -> Result<Vec<u8>, (DeadReason, RemoteError)> {
        let max = self.max_message;
        match payload_field(fields) {
            None => Err((
                DeadReason::Malformed,
                RemoteError::protocol(
                    "stream entry has no payload field (moved to the dead letters)",
                ),
            )),
            Some(p) if p.len() as u64 > max => Err((
                DeadReason::TooLarge,
                RemoteError::TooLarge {
                    len: p.len() as u64,
                    max,
                },
            )),
            Some(payload) => Ok(payload),
        }
    }

    /// Encodes a value with the queue's codec and message limit.
    pub(crate) fn encode<T: Serialize>(&self, item: &T) -> Result<Vec<u8>, RemoteError> {
        self.codec.encode(item).map_err(|e| match e {
            // Over the message limit: say by how much, as for bytes.
            CodecError::TooLarge { .. } => {
                match Codec::new().with_max_size(usize::MAX).encoded_len(item) {
                    Ok(len) => RemoteError::TooLarge {
                        len: len as u64,
                        max: self.max_message,
                    },
                    Err(e) => RemoteError::Codec(e),
                }
            }
            e => RemoteError::Codec(e),
        })
    }

    fn create_group(&self, link: &mut Link, give_up: GiveUp) -> Result<(), RemoteError> {
        let created = link.call(
            &self.client,
            self.timeouts(),
            give_up,
            self.io_timeout,
            |con| self.create_group_cmd().query::<()>(con),
        );
        group_created(created)
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
            Err(e) if is_nogroup_error(&e) => {
                self.create_group(link, give_up)?;
                link.call(&self.client, self.timeouts(), give_up, read_timeout, &f)
            }
            other => other,
        }
    }
}

/// A `BUSYGROUP` answer means the group was there already.
pub(crate) fn group_created(created: Result<(), RemoteError>) -> Result<(), RemoteError> {
    match created {
        Err(RemoteError::Server { source }) if source.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Whether the server lost the consumer group (a restart without
/// persistence): the group is created again and the command retried.
pub(crate) fn is_nogroup_error(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Server { source } if is_nogroup(source))
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.detail().is_some_and(|d| d.contains("NOGROUP"))
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not for room or messages (network waits still have their timeouts).
    Never,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    pub(crate) fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }

    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Self::Until(d) => Some(d),
            _ => None,
        }
    }
}

pub(crate) enum SendFail {
    Full,
    Closed,
    Timeout,
    Failed(RemoteError),
}

pub(crate) enum RecvFail {
    Empty,
    Closed,
    Failed(RemoteError),
}

/// A dead-letter stream entry: its id there, and the letter (or why it is
/// not one this crate wrote).
pub(crate) type DeadEntry = (String, Result<DeadLetter, RemoteError>);

impl SendFail {
    /// The error of a blocking put (which waits for room), handing `value` back.
    pub(crate) fn into_put<V>(self, value: V) -> PutError<V> {
        match self {
            Self::Closed => PutError::Closed(value),
            Self::Failed(f) => PutError::Failed(value, f),
            Self::Full | Self::Timeout => unreachable!("a blocking put waits for room"),
        }
    }

    /// The error of a `try_` put, handing `value` back.
    pub(crate) fn into_try_put<V>(self, value: V) -> TryPutError<V> {
        match self {
            Self::Full | Self::Timeout => TryPutError::Full(value),
            Self::Closed => TryPutError::Closed(value),
            Self::Failed(f) => TryPutError::Failed(value, f),
        }
    }

    /// The error of a put with a timeout, handing `value` back.
    pub(crate) fn into_put_timeout<V>(self, value: V) -> PutTimeoutError<V> {
        match self {
            Self::Full | Self::Timeout => PutTimeoutError::Timeout(value),
            Self::Closed => PutTimeoutError::Closed(value),
            Self::Failed(f) => PutTimeoutError::Failed(value, f),
        }
    }
}

impl RecvFail {
    /// The error of a blocking get (which waits for a message).
    pub(crate) fn into_get(self) -> GetError {
        match self {
            Self::Closed => GetError::Closed,
            Self::Failed(f) => GetError::Failed(f),
            Self::Empty => unreachable!("a blocking get waits for a message"),
        }
    }

    /// The error of a `try_` get.
    pub(crate) fn into_try_get(self) -> TryGetError {
        match self {
            Self::Empty => TryGetError::Empty,
            Self::Closed => TryGetError::Closed,
            Self::Failed(f) => TryGetError::Failed(f),
        }
    }

    /// The error of a get with a timeout.
    pub(crate) fn into_get_timeout(self) -> GetTimeoutError {
        match self {
            Self::Empty => GetTimeoutError::Timeout,
            Self::Closed => GetTimeoutError::Closed,
            Self::Failed(f) => GetTimeoutError::Failed(f),
        }
    }
}

/// A message a joinable queue's get handed out, not yet `task_done`.
struct Held {
    id: String,
    deliveries: u64,
}

/// A message taken from the stream and not yet acknowledged.
struct Delivery {
    id: String,
    deliveries: u64,
    payload: Vec<u8>,
    /// When the read that delivered it was sent (its idle time on the
    /// server is at most the time since).
    read_at: Instant,
}

struct Getter {
    link: Link,
    /// Where the next `XAUTOCLAIM` step starts.
    cursor: String,
    /// Messages read ahead and not handed out yet, oldest first: pending
    /// for this consumer, unacknowledged.
    ahead: VecDeque<Delivery>,
    /// When the last take-over step ran: until [`Shared::scan_every`]
    /// later, a get first tries a plain `XREADGROUP` for new messages.
    scanned_at: Option<Instant>,
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
    outstanding: Mutex<VecDeque<Held>>,
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

pub(crate) fn generated_consumer_name() -> String {
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
                ahead: VecDeque::new(),
                scanned_at: None,
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
    pub(crate) fn control<R>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, RemoteError> {
        let s = &self.shared;
        self.settle();
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
        self.dead_letters_after("0-0", max)?
            .into_iter()
            .map(|(_, letter)| letter)
            .collect()
    }

    /// A key of this queue's own under its hash tag: `PREFIX{name}:suffix`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        let base = self.shared.stream.strip_suffix("stream").unwrap_or("");
        format!("{base}{suffix}")
    }

    /// Resets the idle time of every message this handle holds (got and
    /// not yet `task_done`), so that nobody takes them over while this
    /// consumer works on them. Returns how many it reset.
    pub(crate) fn touch_held(&self) -> Result<u64, RemoteError> {
        let ids: Vec<String> = lock(&self.outstanding)
            .iter()
            .map(|h| h.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let s = &self.shared;
        self.control(|con| {
            let mut touch = s.scripts.touch.key(&s.stream);
            touch.arg(GROUP).arg(&self.consumer);
            for id in &ids {
                touch.arg(id);
            }
            touch.invoke::<u64>(con)
        })
    }

    /// Gives the `k` items this handle got last (and has not finished)
    /// back to the group, as read-ahead messages are given back: idle for
    /// `min_idle` at once, so any consumer's next take-over step takes
    /// them, their delivery counts set back by the delivery that did not
    /// run them. They no longer count as held.
    pub(crate) fn give_back_newest(&self, k: usize) -> Result<(), RemoteError> {
        let given: Vec<Held> = {
            let mut held = lock(&self.outstanding);
            let from = held.len().saturating_sub(k);
            held.drain(from..).collect()
        };
        if given.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        self.control(|con| {
            s.release_script(
                &self.consumer,
                given.iter().map(|h| (h.id.as_str(), h.deliveries)),
            )
            .invoke::<i64>(con)
        })
        .map(drop)
    }

    /// Up to `max` dead letters after the entry `after` (`"0-0"`: from the
    /// first), left where they are, each with its entry id in the
    /// dead-letter stream; an entry this crate did not write is a
    /// [`RemoteError::Protocol`] in its place.
    pub(crate) fn dead_letters_after(
        &self,
        after: &str,
        max: usize,
    ) -> Result<Vec<DeadEntry>, RemoteError> {
        let reply: Value = self.control(|con| {
            redis::cmd("XRANGE")
                .arg(&self.shared.dead)
                .arg(format!("({after}"))
                .arg("+")
                .arg("COUNT")
                .arg(max)
                .query(con)
        })?;
        let entries = parse::dead_letter_range(reply, max)?;
        entries
            .into_iter()
            .map(|entry| {
                let entry_id = match &entry {
                    Value::Array(parts) => parts
                        .first()
                        .cloned()
                        .and_then(into_bytes)
                        .and_then(|b| String::from_utf8(b).ok()),
                    _ => None,
                }
                .ok_or_else(|| RemoteError::protocol("dead-letter entry is malformed"))?;
                Ok((entry_id, parse_dead_letter(entry)))
            })
            .collect()
    }

    /// Deletes the dead letter with entry id `entry_id`.
    pub(crate) fn remove_dead_letter(&self, entry_id: &str) -> Result<(), RemoteError> {
        self.control(|con| {
            redis::cmd("XDEL")
                .arg(&self.shared.dead)
                .arg(entry_id)
                .query::<()>(con)
        })
    }

    // ---- puts ----

    /// Reads the replies of acknowledgements this handle's gets sent, so
    /// that what follows on the other connection sees them done (unless a
    /// get of this handle is running on another thread).
    fn settle(&self) {
        if let Ok(mut getter) = self.getter.try_lock() {
            getter.link.settle(self.shared.io_timeout);
        }
    }

    /// Puts every payload or none (one script call).
    fn send<B: AsRef<[u8]>>(&self, payloads: &[B], wait: Wait) -> Result<(), SendFail> {
        self.send_counted(payloads, None, wait).map(drop)
    }

    /// [`send`](Self::send), adding the number of payloads to the integer
    /// at `counter` (a key under the queue's hash tag, see
    /// [`key`](Self::key)) in the same atomic step; returns the counter's
    /// new value (0 without a counter).
    pub(crate) fn send_counted<B: AsRef<[u8]>>(
        &self,
        payloads: &[B],
        counter: Option<&str>,
        wait: Wait,
    ) -> Result<u64, SendFail> {
        let s = &self.shared;
        if !s.check_batch(payloads)? {
            return Ok(0);
        }
        self.settle();
        let deadline = wait.deadline();
        let mut pause = FIRST_POLL;
        let mut link = self.link();
        loop {
            let put = link.call(
                &s.client,
                s.timeouts(),
                s.give_up(deadline),
                s.io_wait(deadline),
                |con| s.put_script(payloads, counter).invoke::<i64>(con),
            );
            let put = put.and_then(|n| parse::put_reply(n, counter.is_some()));
            match put.map_err(SendFail::Failed)? {
                PutReply::Added(n) => return Ok(n),
                PutReply::Closed => return Err(SendFail::Closed),
                PutReply::Full => {}
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
        self.send(&[data], Wait::Forever)
            .map_err(|e| e.into_put(data))
    }

    /// Puts raw bytes if there is room now.
    ///
    /// # Errors
    ///
    /// `Full`, `Closed`, or `Failed`.
    pub fn try_put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), TryPutError<&'a [u8]>> {
        self.send(&[data], Wait::Never)
            .map_err(|e| e.into_try_put(data))
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
        self.send(&[data], Wait::after(timeout))
            .map_err(|e| e.into_put_timeout(data))
    }

    /// Puts every message of `data`, in order, or none, waiting while the
    /// queue has no room for all of them: one script call (one round trip)
    /// checks that the queue is open and that `qsize + data.len() <=
    /// maxsize`, then adds them all; another producer's messages never
    /// come between them. The bound holds for the whole batch: a batch is
    /// never split, and never added in part. A batch longer than `maxsize`
    /// can never fit and fails at once with [`RemoteError::OverMaxsize`];
    /// an empty one succeeds without a round trip. A waiting batch polls
    /// with back-off like [`put_bytes`](Self::put_bytes), so single puts
    /// may overtake it while room is scarce.
    ///
    /// A batch is one command: keep it well under the server's
    /// `client-query-buffer-limit` (1 GiB by default).
    ///
    /// ```no_run
    /// use multiproc_redis::RemoteQueue;
    ///
    /// let q: RemoteQueue<()> = RemoteQueue::open("redis://127.0.0.1:6379/0", "raw")?;
    /// let batch: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 8]).collect();
    /// q.put_many_bytes(&batch).expect("put");
    /// assert_eq!(q.qsize()?, 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed`, or `Failed` with [`RemoteError::TooLarge`] (one message
    /// over the limit), [`RemoteError::OverMaxsize`] or a server failure;
    /// the batch is handed back and none of it was added. After
    /// [`RemoteError::Unavailable`] (the connection broke with the command
    /// on its way) either all of it or none was added.
    pub fn put_many_bytes<'a, B: AsRef<[u8]>>(
        &self,
        data: &'a [B],
    ) -> Result<(), PutError<&'a [B]>> {
        self.send(data, Wait::Forever).map_err(|e| e.into_put(data))
    }

    /// As [`put_many_bytes`](Self::put_many_bytes), if there is room for
    /// the whole batch now.
    ///
    /// # Errors
    ///
    /// `Full` (nothing added), `Closed`, or `Failed`.
    pub fn try_put_many_bytes<'a, B: AsRef<[u8]>>(
        &self,
        data: &'a [B],
    ) -> Result<(), TryPutError<&'a [B]>> {
        self.send(data, Wait::Never)
            .map_err(|e| e.into_try_put(data))
    }

    /// As [`put_many_bytes`](Self::put_many_bytes), waiting at most
    /// `timeout` for room for the whole batch and for the server.
    ///
    /// # Errors
    ///
    /// `Timeout` (nothing added), `Closed`, or `Failed`.
    pub fn put_many_bytes_timeout<'a, B: AsRef<[u8]>>(
        &self,
        data: &'a [B],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'a [B]>> {
        self.send(data, Wait::after(timeout))
            .map_err(|e| e.into_put_timeout(data))
    }

    // ---- gets ----

    /// Takes 1 to `max` messages: those read ahead first, else from the
    /// server (reading up to `read_ahead` and keeping the surplus).
    fn receive(&self, wait: Wait, max: usize) -> Result<Vec<Delivery>, RecvFail> {
        let s = &self.shared;
        let deadline = wait.deadline();
        let mut getter = lock(&self.getter);
        let getter = &mut *getter;
        if let Some(got) = self.take_ahead(getter, max) {
            return Ok(got);
        }
        let want = max.max(s.read_ahead);
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
            let fast = getter
                .scanned_at
                .is_some_and(|t| t.elapsed() < s.scan_every());
            if fast {
                match self.read_new(getter, give_up, None, deadline, want) {
                    Ok(Some(d)) => return Ok(Self::keep_ahead(getter, d, max)),
                    // Nothing new: the full step (take-overs, closed).
                    Ok(None) => getter.scanned_at = None,
                    Err(e) if e.is_unavailable() => getter.scanned_at = None,
                    Err(e) => return Err(RecvFail::Failed(e)),
                }
            }
            let step = self.take_step(getter, give_up, deadline, want);
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
                Taken::Messages(d) => return Ok(Self::keep_ahead(getter, d, max)),
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
            match self.read_new(getter, give_up, Some(block), deadline, want) {
                Ok(Some(d)) => return Ok(Self::keep_ahead(getter, d, max)),
                Ok(None) => {}
                Err(e) if e.is_unavailable() => {
                    failing_since.get_or_insert_with(Instant::now);
                }
                Err(e) => return Err(RecvFail::Failed(e)),
            }
        }
    }

    /// Up to `max` messages read ahead, if there are any fresh ones: one
    /// whose read is half `min_idle` old or older could soon be taken over
    /// by another consumer, so those are given back instead.
    fn take_ahead(&self, getter: &mut Getter, max: usize) -> Option<Vec<Delivery>> {
        let front = getter.ahead.front()?;
        if front.read_at.elapsed() >= self.shared.min_idle / 2 {
            self.release_ahead(getter);
            return None;
        }
        let n = max.min(getter.ahead.len());
        Some(getter.ahead.drain(..n).collect())
    }

    /// Hands out the first `max` of `taken`, keeps the rest for later gets.
    fn keep_ahead(getter: &mut Getter, mut taken: Vec<Delivery>, max: usize) -> Vec<Delivery> {
        if taken.len() > max {
            getter.ahead.extend(taken.drain(max..));
        }
        taken
    }

    /// Gives the messages read ahead back to the group (best effort: if
    /// the server is gone they are re-delivered after `min_idle` anyway).
    fn release_ahead(&self, getter: &mut Getter) {
        if getter.ahead.is_empty() {
            return;
        }
        let s = &self.shared;
        let ahead: Vec<Delivery> = getter.ahead.drain(..).collect();
        let _ = getter
            .link
            .call(&s.client, s.timeouts(), GiveUp::Once, s.io_timeout, |con| {
                s.release_script(
                    &self.consumer,
                    ahead.iter().map(|d| (d.id.as_str(), d.deliveries)),
                )
                .invoke::<i64>(con)
            });
    }

    /// The non-blocking part of a get: take over idle messages, or take
    /// new ones, up to `want` in all, or learn that the queue is closed and
    /// drained.
    fn take_step(
        &self,
        getter: &mut Getter,
        give_up: GiveUp,
        deadline: Option<Instant>,
        want: usize,
    ) -> Result<Taken, RemoteError> {
        let s = &self.shared;
        let cursor = getter.cursor.clone();
        let read_at = Instant::now();
        getter.scanned_at = Some(read_at);
        let reply: Value = s.with_group(&mut getter.link, give_up, s.io_wait(deadline), |con| {
            s.take_script(&self.consumer, &cursor, want).invoke(con)
        })?;
        let (cursor, found) = parse::take_reply(reply, want)?;
        getter.cursor = cursor;
        match found {
            TakeReply::Closed => Ok(Taken::Closed),
            TakeReply::Empty => Ok(Taken::Empty),
            TakeReply::Some(taken) => self.accept_all(getter, taken, read_at).map(Taken::Messages),
        }
    }

    /// `XREADGROUP … >`: new messages, waiting on the server for at most
    /// `block` if there is none (not at all without).
    fn read_new(
        &self,
        getter: &mut Getter,
        give_up: GiveUp,
        block: Option<Duration>,
        deadline: Option<Instant>,
        want: usize,
    ) -> Result<Option<Vec<Delivery>>, RemoteError> {
        let s = &self.shared;
        let read_timeout = block.unwrap_or(Duration::ZERO) + s.io_wait(deadline);
        let read_at = Instant::now();
        let reply: Value = s.with_group(&mut getter.link, give_up, read_timeout, |con| {
            s.read_cmd(&self.consumer, want, block).query(con)
        })?;
        match parse::read_reply(reply, want)? {
            None => Ok(None),
            Some(taken) => self.accept_all(getter, taken, read_at).map(Some),
        }
    }

    /// [`accept`](Self::accept) for each entry: the good ones, or, if
    /// there is none, the first one's error.
    fn accept_all(
        &self,
        getter: &mut Getter,
        taken: Vec<Entry>,
        read_at: Instant,
    ) -> Result<Vec<Delivery>, RemoteError> {
        let mut good = Vec::with_capacity(taken.len());
        let mut first_error = None;
        for (id, deliveries, fields) in taken {
            match self.accept(getter, id, deliveries, fields, read_at) {
                Ok(d) => good.push(d),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if good.is_empty() => Err(e),
            _ => Ok(good),
        }
    }

    /// Checks a delivered entry: one with no payload field, or a payload
    /// over the limit, goes to the dead-letter stream.
    fn accept(
        &self,
        getter: &mut Getter,
        id: String,
        deliveries: u64,
        fields: Vec<Value>,
        read_at: Instant,
    ) -> Result<Delivery, RemoteError> {
        match self.shared.check_payload(fields) {
            Err((reason, e)) => {
                self.dead_letter(&mut getter.link, &id, deliveries, reason);
                Err(e)
            }
            Ok(payload) => Ok(Delivery {
                id,
                deliveries,
                payload,
                read_at,
            }),
        }
    }

    /// Moves a message this handle holds to the dead letters; best effort
    /// (if the server is gone the message stays pending, comes back, and
    /// ends there after its last delivery).
    fn dead_letter(&self, link: &mut Link, id: &str, deliveries: u64, reason: DeadReason) {
        let s = &self.shared;
        let _ = link.call(&s.client, s.timeouts(), GiveUp::Once, s.io_timeout, |con| {
            s.dead_script(id, deliveries, reason).invoke::<i64>(con)
        });
    }

    /// Acknowledges and deletes message `id`, waiting for the reply.
    fn ack<S: AsRef<str>>(
        &self,
        link: &mut Link,
        ids: &[S],
        deadline: Option<Instant>,
    ) -> Result<(), RemoteError> {
        let s = &self.shared;
        link.call(
            &s.client,
            s.timeouts(),
            s.give_up(deadline),
            s.io_wait(deadline),
            |con| s.ack_script(ids).invoke::<i64>(con),
        )
        .map(drop)
    }

    /// After a get took messages and is about to hand them out: the plain
    /// queue acknowledges them (one command, sent now, its reply read by
    /// the next command on the connection), the joinable one remembers
    /// them for `task_done`.
    fn finish(&self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        if self.shared.ack_on_get {
            let s = &self.shared;
            let packed = s
                .ack_cmd(deliveries.iter().map(|d| d.id.as_str()))
                .get_packed_command();
            let mut getter = lock(&self.getter);
            // A connection that broke here may have lost the command: the
            // messages are handed out all the same and, unacknowledged,
            // come again after min_idle (at least once, never lost).
            let _ = getter
                .link
                .send_only(&s.client, s.timeouts(), GiveUp::Once, &packed);
        } else {
            lock(&self.outstanding).extend(deliveries.iter().map(|d| Held {
                id: d.id.clone(),
                deliveries: d.deliveries,
            }));
        }
    }

    fn get_bytes_with(&self, wait: Wait) -> Result<Vec<u8>, RecvFail> {
        let mut got = self.receive(wait, 1)?;
        self.finish(&got);
        Ok(got.pop().expect("a receive returns a message").payload)
    }

    fn get_many_bytes_with(&self, max: usize, wait: Wait) -> Result<Vec<Vec<u8>>, RecvFail> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let got = self.receive(wait, max.min(MAX_BATCH))?;
        self.finish(&got);
        Ok(got.into_iter().map(|d| d.payload).collect())
    }

    /// Gets 1 to `max` messages as raw bytes: waits at most `timeout` for
    /// the first, then takes what else is there now, up to `max` (at most
    /// [`MAX_BATCH`]), in one round trip (one take-over step and one
    /// `XREADGROUP COUNT`), or none if this handle has enough read ahead.
    /// Each message is delivered as by a single get: the plain queue
    /// acknowledges them all before they are returned (one command); the
    /// joinable queue leaves each one pending until its own
    /// [`task_done`](RemoteJoinableQueue::task_done), oldest first. A
    /// consumer that dies before that gets every one of them re-delivered
    /// after [`min_idle`](RemoteQueueBuilder::min_idle). A malformed or
    /// oversized message among them moves to the dead letters and is left
    /// out; only when every message taken was bad does the call fail with
    /// the first one's error. `max == 0` returns an empty vector at once.
    ///
    /// ```no_run
    /// use multiproc_redis::RemoteQueue;
    /// use std::time::Duration;
    ///
    /// let q: RemoteQueue<()> = RemoteQueue::open("redis://127.0.0.1:6379/0", "raw")?;
    /// q.put_many_bytes(&[&b"a"[..], b"b", b"c"]).expect("put");
    /// let got = q.get_many_bytes(10, Duration::from_secs(1))?;
    /// assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Timeout` when nothing came, `Closed` when the queue is closed and
    /// drained, `Failed` as for [`get_bytes_timeout`](Self::get_bytes_timeout).
    pub fn get_many_bytes(
        &self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, GetTimeoutError> {
        self.get_many_bytes_with(max, Wait::after(timeout))
            .map_err(RecvFail::into_get_timeout)
    }

    /// Gets raw bytes, waiting for a message.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and drained; `Failed` when the
    /// server stays out of reach for [`retry_for`](RemoteQueueBuilder::retry_for)
    /// or a message is malformed.
    pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_bytes_with(Wait::Forever)
            .map_err(RecvFail::into_get)
    }

    /// Gets raw bytes if a message is there now.
    ///
    /// # Errors
    ///
    /// `Empty`, `Closed` or `Failed`.
    pub fn try_get_bytes(&self) -> Result<Vec<u8>, TryGetError> {
        self.get_bytes_with(Wait::Never)
            .map_err(RecvFail::into_try_get)
    }

    /// Gets raw bytes, waiting at most `timeout` (for a message, and for
    /// the server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_bytes_with(Wait::after(timeout))
            .map_err(RecvFail::into_get_timeout)
    }
}

enum Taken {
    Messages(Vec<Delivery>),
    Closed,
    Empty,
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    fn encode(&self, item: &T) -> Result<Vec<u8>, RemoteError> {
        self.shared.encode(item)
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

    /// Decodes what a get took: the messages that decode are finished
    /// (acknowledged, or remembered for `task_done`) and returned; the
    /// others move to the dead letters. Only when none decodes does it
    /// fail, with the first one's error.
    fn decode_all(&self, taken: Vec<Delivery>) -> Result<Vec<T>, RecvFail> {
        let mut values = Vec::with_capacity(taken.len());
        let mut good = Vec::with_capacity(taken.len());
        let mut first_error = None;
        for delivery in taken {
            match self.shared.codec.decode::<T>(&delivery.payload) {
                Ok(v) => {
                    values.push(v);
                    good.push(delivery);
                }
                Err(e) => {
                    let mut getter = lock(&self.getter);
                    self.dead_letter(
                        &mut getter.link,
                        &delivery.id,
                        delivery.deliveries,
                        DeadReason::Undecodable,
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        self.finish(&good);
        match first_error {
            Some(e) if values.is_empty() => Err(RecvFail::Failed(RemoteError::Codec(e))),
            _ => Ok(values),
        }
    }

    fn get_with(&self, wait: Wait) -> Result<T, RecvFail> {
        let taken = self.receive(wait, 1)?;
        let mut values = self.decode_all(taken)?;
        Ok(values.pop().expect("one message decoded"))
    }

    /// Gets 1 to `max` items: waits at most `timeout` for the first, then
    /// takes what else is there now, up to `max` (at most [`MAX_BATCH`]),
    /// in one round trip, as [`get_many_bytes`](Self::get_many_bytes)
    /// does; the delivery guarantees are those of single gets, message by
    /// message. A message that does not decode moves to the dead letters
    /// and is left out (the call fails with [`RemoteError::Codec`] only
    /// when none decodes).
    ///
    /// ```no_run
    /// use multiproc_redis::RemoteQueue;
    /// use std::time::Duration;
    ///
    /// let q: RemoteQueue<u32> = RemoteQueue::open("redis://127.0.0.1:6379/0", "numbers")?;
    /// q.put_many(&[1, 2, 3])?;
    /// let got = q.get_many(64, Duration::from_secs(1))?;
    /// assert_eq!(got, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Timeout` when nothing came, `Closed` when the queue is closed and
    /// drained, `Failed` as for [`get_timeout`](Self::get_timeout).
    pub fn get_many(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetTimeoutError> {
        let got = if max == 0 {
            Ok(Vec::new())
        } else {
            self.receive(Wait::after(timeout), max.min(MAX_BATCH))
                .and_then(|taken| self.decode_all(taken))
        };
        got.map_err(RecvFail::into_get_timeout)
    }

    fn encode_all(&self, items: &[T]) -> Result<Vec<Vec<u8>>, RemoteError> {
        items.iter().map(|item| self.encode(item)).collect()
    }

    /// Puts every item of `items`, in order, or none: waits while the
    /// queue has no room for all of them (polling as [`put`](Self::put)
    /// does), then adds them in one atomic script call (one round trip).
    /// Another producer's messages never come between them. See
    /// [`put_many_bytes`](Self::put_many_bytes) for the bound and the
    /// failures.
    ///
    /// ```no_run
    /// use multiproc_redis::RemoteQueue;
    ///
    /// let q: RemoteQueue<u32> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "numbers")
    ///     .maxsize(100)
    ///     .build()?;
    /// q.put_many(&[1, 2, 3])?;
    /// let err = q.put_many(&[0; 101]).unwrap_err(); // can never fit
    /// assert!(err.failure().unwrap().is_over_maxsize());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Closed`, or `Failed` (codec, size, a batch over `maxsize`,
    /// server); the items are handed back, and none of them was added
    /// (except after [`RemoteError::Unavailable`]: then all or none).
    pub fn put_many<'a>(&self, items: &'a [T]) -> Result<(), PutError<&'a [T]>> {
        let bytes = self
            .encode_all(items)
            .map_err(|e| PutError::Failed(items, e))?;
        self.put_many_bytes(&bytes).map_err(|e| e.with(items))
    }

    /// As [`put_many`](Self::put_many), if there is room for every item
    /// now.
    ///
    /// # Errors
    ///
    /// `Full`, `Closed` or `Failed`; the items are handed back.
    pub fn try_put_many<'a>(&self, items: &'a [T]) -> Result<(), TryPutError<&'a [T]>> {
        let bytes = self
            .encode_all(items)
            .map_err(|e| TryPutError::Failed(items, e))?;
        self.try_put_many_bytes(&bytes).map_err(|e| e.with(items))
    }

    /// As [`put_many`](Self::put_many), waiting at most `timeout` for room
    /// for every item and for the server.
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`; the items are handed back.
    pub fn put_many_timeout<'a>(
        &self,
        items: &'a [T],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'a [T]>> {
        let bytes = self
            .encode_all(items)
            .map_err(|e| PutTimeoutError::Failed(items, e))?;
        self.put_many_bytes_timeout(&bytes, timeout)
            .map_err(|e| e.with(items))
    }

    /// Gets an item, waiting for one.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and drained; `Failed` when the
    /// server stays out of reach for [`retry_for`](RemoteQueueBuilder::retry_for),
    /// or the message does not decode (it moves to the dead letters).
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::Forever).map_err(RecvFail::into_get)
    }

    /// Gets an item if one is there now.
    ///
    /// # Errors
    ///
    /// `Empty`, `Closed` or `Failed`.
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(Wait::Never).map_err(RecvFail::into_try_get)
    }

    /// Gets an item, waiting at most `timeout` (for an item, and for the
    /// server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(Wait::after(timeout))
            .map_err(RecvFail::into_get_timeout)
    }
}

impl<T> Drop for RemoteQueue<T> {
    /// Gives back the messages read ahead and not handed out, then leaves
    /// the consumer group if this handle holds no pending message (best
    /// effort, only over a connection it already has, waiting at most
    /// 500 ms for each reply).
    fn drop(&mut self) {
        let s = Arc::clone(&self.shared);
        let s = &*s;
        let mut getter = lock(&self.getter);
        if !getter.link.is_connected() {
            return;
        }
        self.release_ahead(&mut getter);
        let _ = getter.link.call(
            &s.client,
            s.timeouts(),
            GiveUp::Once,
            s.io_timeout.min(Duration::from_millis(500)),
            |con| s.forget_script(&self.consumer).invoke::<i64>(con),
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

/// `Clone`, `Debug` and `Deref` (to the queue it wraps, in its `queue`
/// field) of a joinable queue type: the blocking one and the async one.
macro_rules! joinable_wrapper {
    ($joinable:ident, $queue:ident) => {
        impl<T> Clone for $joinable<T> {
            fn clone(&self) -> Self {
                Self {
                    queue: self.queue.clone(),
                }
            }
        }

        impl<T> std::fmt::Debug for $joinable<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($joinable))
                    .field(&self.queue)
                    .finish()
            }
        }

        impl<T> std::ops::Deref for $joinable<T> {
            type Target = $queue<T>;
            fn deref(&self) -> &$queue<T> {
                &self.queue
            }
        }
    };
}
pub(crate) use joinable_wrapper;

joinable_wrapper!(RemoteJoinableQueue, RemoteQueue);

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
        self.task_done_many(1)
    }

    /// [`task_done`](Self::task_done) for the `n` oldest items this handle
    /// holds, in one round trip (after a [`get_many`](RemoteQueue::get_many)).
    ///
    /// # Errors
    ///
    /// [`TaskDoneError::Unmatched`] when this handle holds fewer than `n`
    /// unfinished items (none is marked done then);
    /// [`TaskDoneError::Failed`] when the server cannot be reached (the
    /// items stay unfinished).
    pub fn task_done_many(&self, n: usize) -> Result<(), TaskDoneError> {
        let mut outstanding = lock(&self.queue.outstanding);
        if n > outstanding.len() {
            return Err(TaskDoneError::Unmatched);
        }
        if n == 0 {
            return Ok(());
        }
        let ids: Vec<&str> = outstanding.iter().take(n).map(|h| h.id.as_str()).collect();
        self.queue
            .ack(&mut self.queue.link(), &ids, None)
            .map_err(TaskDoneError::Failed)?;
        outstanding.drain(..n);
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
            b().read_ahead(0).build::<u8>().unwrap_err(),
            b().read_ahead(MAX_BATCH + 1).build::<u8>().unwrap_err(),
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
