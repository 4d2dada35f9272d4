//! What the async test files share: the two runtimes behind one trait,
//! bounded waits, and small combinators (the crate depends on no futures
//! library). Each scenario runs on both runtimes through
//! [`on_both_runtimes!`].
#![allow(dead_code)]

use multiproc_async::Reactor;
use multiproc_async::smol::Smol;
use multiproc_async::tokio::Tokio;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

/// Longest a scenario may take before it counts as hung.
pub const HUNG: Duration = Duration::from_secs(60);

/// What a scenario needs of a runtime beyond the crate's [`Reactor`].
pub trait Runtime: Reactor {
    const NAME: &'static str;
    fn block_on<F: Future>(future: F) -> F::Output;
}

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";
    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }
}

impl Runtime for Smol {
    const NAME: &'static str = "smol";
    fn block_on<F: Future>(future: F) -> F::Output {
        smol::block_on(future)
    }
}

/// Runs `scenario` on runtime `R`, failing it if it takes longer than
/// [`HUNG`].
pub fn on<R: Runtime>(scenario: impl Future<Output = ()>) {
    R::block_on(async {
        if within::<R, _>(HUNG, scenario).await.is_none() {
            panic!("the scenario hung on {}", R::NAME);
        }
    });
}

/// `Some(output)` if `future` completes before `limit`, else `None` (and
/// `future` is dropped: cancelled).
pub async fn within<R: Runtime, F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut timer = pin!(R::sleep(limit));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Runs every future of `futures` to completion, concurrently.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// Runs `a` and `b` to completion, concurrently.
pub async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    std::future::poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        if out_a.is_some() && out_b.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (out_a.unwrap(), out_b.unwrap())
}

/// Polls `future` once: its first poll registers what it waits for.
pub async fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| Poll::Ready(future.take().expect("polled once").poll(cx))).await
}

/// SIGKILLs process `pid` after `delay`, from a thread of its own.
pub fn kill_after(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    })
}

/// Argument `i` of a child role, parsed.
pub fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    args[i].parse().unwrap()
}

/// The same scenarios as one trial per runtime each.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        vec![$(
            multiproc_testkit::Trial::test(concat!(stringify!($name), "_tokio"), || {
                $name::<multiproc_async::tokio::Tokio>();
                Ok(())
            }),
            multiproc_testkit::Trial::test(concat!(stringify!($name), "_smol"), || {
                $name::<multiproc_async::smol::Smol>();
                Ok(())
            }),
        )*]
    };
}
