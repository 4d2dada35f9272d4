//! One connection to the server, made when first needed and made again
//! after it broke: connecting retries with back-off until the caller's
//! give-up point, every command waits at most its read timeout, and a
//! connection that saw an I/O error is dropped (the next call reconnects).
//!
//! A connection idle for [`IDLE_CHECK`] is asked a `PING` before the next
//! command: one the server closed meanwhile (a restart) is made again
//! then, so a command that is not safe to repeat never goes out on a
//! connection already dead.
//!
//! A command can also be sent without waiting for its reply
//! ([`Link::send_only`]): the reply is read, and dropped, before the next
//! command's; if the connection breaks first, the command may or may not
//! have run.

use crate::RemoteError;
use redis::{Client, Connection, RedisResult};
use std::time::{Duration, Instant};

/// First pause between connection attempts; doubles up to [`MAX_PAUSE`].
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between connection attempts.
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(500);
/// Shortest read timeout a command gets, however close its deadline: a
/// timed operation returns at most this much after its deadline when the
/// server stalls.
pub(crate) const MIN_IO_WAIT: Duration = Duration::from_millis(50);

/// How long a connection may sit unused before it is checked with a
/// `PING` (one round trip) ahead of the next command.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// When to stop trying to connect.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GiveUp {
    /// One attempt, with the full connect timeout.
    Once,
    /// Attempts with back-off until this instant (at least one).
    At(Instant),
}

pub(crate) struct Link {
    con: Option<Connection>,
    read_timeout: Option<Duration>,
    /// Replies of commands sent with [`Link::send_only`], not read yet.
    unread: usize,
    /// When the connection last carried a command.
    used_at: Instant,
}

impl Link {
    pub(crate) fn new() -> Self {
        Self {
            con: None,
            read_timeout: None,
            unread: 0,
            used_at: Instant::now(),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.con.is_some()
    }

    pub(crate) fn disconnect(&mut self) {
        self.con = None;
        self.unread = 0;
    }

    fn connect(
        &mut self,
        client: &Client,
        connect_timeout: Duration,
        io_timeout: Duration,
        give_up: GiveUp,
    ) -> Result<&mut Connection, RemoteError> {
        let mut pause = FIRST_PAUSE;
        loop {
            let limit = match give_up {
                GiveUp::Once => connect_timeout,
                GiveUp::At(t) => connect_timeout
                    .min(t.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
            };
            let attempt = client.get_connection_with_timeout(limit).and_then(|con| {
                con.set_write_timeout(Some(io_timeout))?;
                Ok(con)
            });
            match attempt {
                Ok(con) => {
                    self.read_timeout = None;
                    self.unread = 0;
                    return Ok(self.con.insert(con));
                }
                Err(e) => {
                    let e = RemoteError::from_redis(e);
                    let retry = match give_up {
                        GiveUp::Once => false,
                        GiveUp::At(t) => e.is_unavailable() && Instant::now() + pause < t,
                    };
                    if !retry {
                        return Err(e);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Runs `f` on the connection (connecting first if there is none) with
    /// `read_timeout` on replies. An error that leaves the connection in
    /// doubt (I/O, timeout, a reply not understood) drops it.
    pub(crate) fn call<R>(
        &mut self,
        client: &Client,
        timeouts: (Duration, Duration),
        give_up: GiveUp,
        read_timeout: Duration,
        f: impl FnOnce(&mut Connection) -> RedisResult<R>,
    ) -> Result<R, RemoteError> {
        let (connect_timeout, io_timeout) = timeouts;
        self.drain(read_timeout);
        if self.con.is_some() && self.used_at.elapsed() >= IDLE_CHECK {
            self.check(read_timeout)?;
        }
        if self.con.is_none() {
            self.connect(client, connect_timeout, io_timeout, give_up)?;
        }
        self.set_read_timeout(read_timeout)?;
        let con = self.con.as_mut().expect("connected just above");
        self.used_at = Instant::now();
        f(con).map_err(|e| {
            let e = RemoteError::from_redis(e);
            if e.is_unavailable() || e.is_protocol() {
                self.con = None;
            }
            e
        })
    }

    fn set_read_timeout(&mut self, read_timeout: Duration) -> Result<(), RemoteError> {
        let Some(con) = self.con.as_mut() else {
            return Ok(());
        };
        if self.read_timeout != Some(read_timeout) {
            if let Err(e) = con.set_read_timeout(Some(read_timeout)) {
                self.disconnect();
                return Err(RemoteError::from_redis(e));
            }
            self.read_timeout = Some(read_timeout);
        }
        Ok(())
    }

    /// Asks the idle connection a `PING`: drops it when the server closed
    /// it (the caller connects again); fails when the server does not
    /// answer within `read_timeout` (a stalled server: connecting again
    /// would only wait once more).
    fn check(&mut self, read_timeout: Duration) -> Result<(), RemoteError> {
        self.set_read_timeout(read_timeout)?;
        let Some(con) = self.con.as_mut() else {
            return Ok(());
        };
        match redis::cmd("PING").query::<()>(con) {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => {
                self.disconnect();
                Err(RemoteError::from_redis(e))
            }
            Err(_) => {
                self.disconnect();
                Ok(())
            }
        }
    }

    /// Sends one packed command over the connection (connecting first if
    /// there is none) without waiting for its reply, which the next
    /// [`call`](Self::call) reads and drops. An error (the connection
    /// broke) drops the connection: the command may or may not have
    /// reached the server.
    pub(crate) fn send_only(
        &mut self,
        client: &Client,
        timeouts: (Duration, Duration),
        give_up: GiveUp,
        packed: &[u8],
    ) -> Result<(), RemoteError> {
        let (connect_timeout, io_timeout) = timeouts;
        if self.con.is_none() {
            self.connect(client, connect_timeout, io_timeout, give_up)?;
        }
        let con = self.con.as_mut().expect("connected just above");
        match con.send_packed_command(packed) {
            Ok(()) => {
                self.unread += 1;
                self.used_at = Instant::now();
                Ok(())
            }
            Err(e) => {
                self.disconnect();
                Err(RemoteError::from_redis(e))
            }
        }
    }

    /// Reads the replies of commands sent with [`send_only`](Self::send_only),
    /// waiting at most `read_timeout` for each.
    pub(crate) fn settle(&mut self, read_timeout: Duration) {
        self.drain(read_timeout);
    }

    /// Reads the replies of commands sent with [`send_only`](Self::send_only).
    /// An error reply is dropped like any other (those commands' effects
    /// are best effort); a broken connection is dropped.
    fn drain(&mut self, read_timeout: Duration) {
        if self.unread == 0 {
            return;
        }
        if self.con.is_none() {
            self.unread = 0;
            return;
        }
        if self.set_read_timeout(read_timeout).is_err() {
            return;
        }
        let con = self.con.as_mut().expect("checked above");
        while self.unread > 0 {
            match con.recv_response() {
                Ok(_) => self.unread -= 1,
                Err(e) => {
                    let e = RemoteError::from_redis(e);
                    if e.is_unavailable() || e.is_protocol() {
                        self.disconnect();
                        return;
                    }
                    self.unread -= 1;
                }
            }
        }
    }
}
