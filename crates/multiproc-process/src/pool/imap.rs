//! [`IMap`]: the lazy `imap`, which submits chunks as the consumer takes
//! results, with a bounded number in flight.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::gather::chunk_items;
use super::result::TaskError;
use super::sinks::Sink;
use super::supervisor::{PREFETCH, Shared};
use super::task::Call;

/// A finished chunk: its index among the submitted ones, and its results.
type Chunk<R> = (usize, Vec<Result<R, TaskError>>);

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered).
pub struct IMap<'p, A, R, I> {
    shared: &'p Shared,
    call: Call,
    input: I,
    chunksize: usize,
    ordered: bool,
    exhausted: bool,
    /// Iterated on the pool's result thread with nothing to hand out: it
    /// yielded [`TaskError::WouldDeadlock`] and ends.
    stuck: bool,
    submitted: usize,
    received: usize,
    /// Chunks handed to the consumer; `submitted - taken` bounds memory.
    taken: usize,
    next_index: usize,
    window: usize,
    results: Arc<Inbox<Chunk<R>>>,
    parked: BTreeMap<usize, Vec<Result<R, TaskError>>>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
    _args: std::marker::PhantomData<fn(A)>,
}

impl<'p, A, R, I> IMap<'p, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// `chunksize` `None` is 1.
    pub(super) fn new(
        shared: &'p Shared,
        call: Call,
        input: I,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> Self {
        Self {
            shared,
            call,
            input,
            chunksize: chunksize.unwrap_or(1).max(1),
            ordered,
            exhausted: false,
            stuck: false,
            submitted: 0,
            received: 0,
            taken: 0,
            next_index: 0,
            // Enough chunks to keep every worker's prefetch full, and a few
            // finished ones waiting for the consumer.
            window: shared.config.processes * (PREFETCH + 2),
            results: Arc::new(Inbox::default()),
            parked: BTreeMap::new(),
            current: Vec::new().into_iter(),
            _args: std::marker::PhantomData,
        }
    }

    fn top_up(&mut self) {
        while !self.exhausted && self.submitted - self.taken < self.window {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let index = self.submitted;
            let len = chunk.len();
            let inbox = Arc::clone(&self.results);
            let sink = Sink::Once(Box::new(move |outcome| {
                let items = chunk_items::<R>(outcome, len)
                    .unwrap_or_else(|e| (0..len).map(|_| Err(e.clone())).collect());
                inbox.push((index, items));
            }));
            self.shared.submit(self.call, &chunk, sink);
            self.submitted += 1;
        }
    }
}

impl<A, R, I> Iterator for IMap<'_, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance(|inbox, on_result_thread| {
            Poll::Ready(if on_result_thread {
                inbox.try_pop()
            } else {
                Some(inbox.pop())
            })
        }) {
            Poll::Ready(item) => item,
            Poll::Pending => unreachable!("a blocking receive is always ready"),
        }
    }
}

impl<A, R, I> IMap<'_, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// The next result, awaited instead of waited for: the stream form of
    /// `imap`/`imap_unordered`, on any runtime (the pool's result thread
    /// wakes the task; no descriptor, no thread of its own). Submitting
    /// more chunks as results are taken may still block briefly while the
    /// task queue is full.
    ///
    /// ```
    /// use multiproc_process::Pool;
    ///
    /// fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// let pool = Pool::new(2)?;
    /// let mut results = pool.imap(double, 0..10u32, None);
    /// let doubled = block_on(async {
    ///     let mut all = Vec::new();
    ///     while let Some(x) = results.next_async().await {
    ///         all.push(x?);
    ///     }
    ///     Ok::<_, multiproc_process::TaskError>(all)
    /// })?;
    /// assert_eq!(doubled, (0..10).map(double).collect::<Vec<_>>());
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark {
    /// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_async(&mut self) -> impl Future<Output = Option<Result<R, TaskError>>> + '_ {
        std::future::poll_fn(move |cx| {
            self.advance(|inbox, on_result_thread| {
                if on_result_thread {
                    Poll::Ready(inbox.try_pop())
                } else {
                    inbox.poll_pop(cx).map(Some)
                }
            })
        })
    }

    /// One step of the iteration: hands out what is there, submits more,
    /// and takes the next finished chunk through `receive` (given the
    /// inbox and whether this is the pool's result thread; `None`: nothing
    /// will come).
    fn advance(
        &mut self,
        mut receive: impl FnMut(&Inbox<Chunk<R>>, bool) -> Poll<Option<Chunk<R>>>,
    ) -> Poll<Option<Result<R, TaskError>>> {
        // On the result thread nothing more can arrive while we wait, so
        // nothing more is submitted either.
        let on_result_thread = self.shared.on_result_thread();
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            if self.stuck {
                return Poll::Ready(None);
            }
            if !on_result_thread {
                self.top_up();
            }
            if self.ordered
                && let Some(items) = self.parked.remove(&self.next_index)
            {
                self.next_index += 1;
                self.taken += 1;
                self.current = items.into_iter();
                continue;
            }
            if self.received == self.submitted && (self.exhausted || !on_result_thread) {
                return Poll::Ready(None);
            }
            let Some((index, items)) = std::task::ready!(receive(&self.results, on_result_thread))
            else {
                if on_result_thread {
                    self.stuck = true;
                    return Poll::Ready(Some(Err(TaskError::WouldDeadlock)));
                }
                return Poll::Ready(None);
            };
            self.received += 1;
            if self.ordered {
                self.parked.insert(index, items);
            } else {
                self.taken += 1;
                self.current = items.into_iter();
            }
        }
    }
}

/// Finished chunks on their way from the pool's result thread to the
/// iterator: a queue that a thread can wait on and a task can await.
struct Inbox<T> {
    state: Mutex<(VecDeque<T>, Option<Waker>)>,
    arrived: Condvar,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((VecDeque::new(), None)),
            arrived: Condvar::new(),
        }
    }
}

impl<T> Inbox<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<T>, Option<Waker>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, item: T) {
        let mut state = self.lock();
        state.0.push_back(item);
        let waker = state.1.take();
        drop(state);
        self.arrived.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn pop(&self) -> T {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.0.pop_front() {
                return item;
            }
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn try_pop(&self) -> Option<T> {
        self.lock().0.pop_front()
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.lock();
        match state.0.pop_front() {
            Some(item) => Poll::Ready(item),
            None => {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<A, R, I> fmt::Debug for IMap<'_, A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("in_flight", &(self.submitted - self.taken))
            .finish()
    }
}
