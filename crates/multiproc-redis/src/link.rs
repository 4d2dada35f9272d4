//! One connection to the server, made when first needed and made again
//! after it broke: connecting retries with back-off until the caller's
//! give-up point, every command waits at most its read timeout, and a
//! connection that saw an I/O error is dropped (the next call reconnects).

use crate::RemoteError;
use redis::{Client, Connection, RedisResult};
use std::time::{Duration, Instant};

/// First pause between connection attempts; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between connection attempts.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// Shortest read timeout a command gets, however close its deadline: a
/// timed operation returns at most this much after its deadline when the
/// server stalls.
pub(crate) const MIN_IO_WAIT: Duration = Duration::from_millis(50);

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
}

impl Link {
    pub(crate) fn new() -> Self {
        Self {
            con: None,
            read_timeout: None,
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.con.is_some()
    }

    pub(crate) fn disconnect(&mut self) {
        self.con = None;
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
        if self.con.is_none() {
            self.connect(client, connect_timeout, io_timeout, give_up)?;
        }
        let con = self.con.as_mut().expect("connected just above");
        if self.read_timeout != Some(read_timeout) {
            if let Err(e) = con.set_read_timeout(Some(read_timeout)) {
                self.con = None;
                return Err(RemoteError::from_redis(e));
            }
            self.read_timeout = Some(read_timeout);
        }
        f(con).map_err(|e| {
            let e = RemoteError::from_redis(e);
            if e.is_unavailable() || e.is_protocol() {
                self.con = None;
            }
            e
        })
    }
}
