//! Awaiting a child [`Process`]: [`join`] (and the per-runtime
//! `tokio::join`, `smol::join`).
//!
//! The wait is [`Process::try_join`] between readiness of
//! [`Process::exit_fd`] (the child's pidfd, or for a fork-server child the
//! socket its server reports the exit status on) and of
//! [`Process::result_fd`] (the child's report, which a child with a large
//! value finishes sending only as it is read). Every start method —
//! `fork`, `spawn`, `forkserver` — is awaitable this way; a fork-server
//! child whose server died is followed through its pidfd (its status is
//! then lost: [`JoinError::StatusDiscarded`]). No thread is started.
//!
//! # Cancellation
//!
//! A dropped `join` future leaves the process as it was: not joined,
//! still to be joined (async or blocking), the part of its report that
//! arrived kept in its connection.

use multiproc_process::{JoinError, Process};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::pin;
use std::task::Poll;

use crate::Reactor;

/// Waits for `process` to end on reactor `R` and gives what
/// [`Process::join`] would: the target's value, or why there is none
/// (after which [`Process::exitcode`] holds the exit code, `-9` for a
/// `SIGKILL`).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_async::process::join;
/// use multiproc_async::tokio::Tokio;
/// use multiproc_process::Process;
///
/// fn double(n: u64) -> u64 { n * 2 }
/// fn quit(code: i32) { std::process::exit(code) }
///
/// let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let mut p = Process::new(double, 21).start()?;
///     assert_eq!(join::<Tokio, _>(&mut p).await?, 42);
///     assert_eq!(p.exitcode(), Some(0));
///
///     let mut p = Process::new(quit, 5).start()?;
///     assert!(multiproc_async::tokio::join(&mut p).await.is_err());
///     assert_eq!(p.exitcode(), Some(5));
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
///
/// # Errors
///
/// As [`Process::join`]; a reactor failure (no runtime, out of
/// descriptors) is [`JoinError::Io`].
pub async fn join<R: Reactor, T: DeserializeOwned + Send>(
    process: &mut Process<T>,
) -> Result<T, JoinError> {
    loop {
        if let Some(value) = process.try_join()? {
            return Ok(value);
        }
        // Registered afresh after each wake-up: the descriptors can change
        // (the report read, a fork server gone), and a fresh registration
        // of a descriptor that is readable now completes at once.
        let exit = register::<R>(process.exit_fd())?;
        let result = process.result_fd().map(register::<R>).transpose()?;
        let exited = R::readable_with(&exit, || Ok(()));
        match &result {
            Some(result) => either(exited, R::readable_with(result, || Ok(()))).await?,
            None => exited.await?,
        }
    }
}

/// A duplicate of `fd`, registered with `R`.
fn register<R: Reactor>(fd: BorrowedFd<'_>) -> io::Result<R::Io> {
    R::register_io(fd.try_clone_to_owned()?)
}

/// Runs `a` and `b` until either completes, with its output.
async fn either<A, B>(a: A, b: B) -> io::Result<()>
where
    A: Future<Output = io::Result<()>>,
    B: Future<Output = io::Result<()>>,
{
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = a.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        b.as_mut().poll(cx)
    })
    .await
}
