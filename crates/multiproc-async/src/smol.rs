//! The queue's futures on async-io, the reactor of smol and async-std: the
//! doorbell waits in an `Async`.

use async_io::{Async, Timer};
use multiproc_queue::Readiness;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::Reactor;

/// The async-io [`Reactor`] (smol, async-std).
#[derive(Debug)]
pub enum Smol {}

/// A [`Queue`](multiproc_queue::Queue) with async operations on smol (see
/// the [crate docs](crate)).
pub type Queue<T> = crate::AsyncQueue<T, Smol>;

/// A [`JoinableQueue`](multiproc_queue::JoinableQueue) with async
/// operations on smol (see [`AsyncJoinableQueue`](crate::AsyncJoinableQueue)).
pub type JoinableQueue<T> = crate::AsyncJoinableQueue<T, Smol>;

/// A doorbell as `Async` wants it.
#[derive(Debug)]
pub struct Bell(Arc<Readiness>);

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Reactor for Smol {
    type Registration = Async<Bell>;

    fn register(readiness: Arc<Readiness>) -> io::Result<Self::Registration> {
        Async::new(Bell(readiness))
    }

    async fn readable(fd: &Self::Registration) -> io::Result<()> {
        fd.readable().await?;
        fd.get_ref().0.drain()?;
        Ok(())
    }

    async fn sleep(duration: Duration) {
        Timer::after(duration).await;
    }
}
