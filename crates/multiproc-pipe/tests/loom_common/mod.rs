//! What the loom models of this crate share: a party that may stop for
//! ever at any step, the stream socket, and the model checker's bounds.

// Each model uses its part of this module.
#![allow(dead_code)]

use loom::model::Builder;
use loom::sync::{Condvar, Mutex};
use std::collections::VecDeque;

/// A party's remaining steps: `None` runs to the end.
pub struct Steps {
    left: Option<usize>,
    /// Steps taken so far (to know when killing one step later changes
    /// nothing).
    pub taken: usize,
}

impl Steps {
    pub fn new(left: Option<usize>) -> Self {
        Self { left, taken: 0 }
    }

    /// Whether the party lives to take the next step.
    pub fn step(&mut self) -> bool {
        self.taken += 1;
        match &mut self.left {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The checker, with a preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise.
pub fn builder() -> Builder {
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder
}

/// The stream socket: first in, first out; what was pushed before the
/// sender died stays readable, then the end of the stream.
pub struct Stream<T> {
    state: Mutex<StreamState<T>>,
    readable: Condvar,
}

struct StreamState<T> {
    queue: VecDeque<T>,
    closed: bool,
    /// Everything ever pushed, in order.
    pushed: Vec<T>,
}

impl<T: Copy> Stream<T> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(StreamState {
                queue: VecDeque::new(),
                closed: false,
                pushed: Vec::new(),
            }),
            readable: Condvar::new(),
        }
    }

    pub fn push(&self, item: T) {
        let mut state = self.state.lock().unwrap();
        state.queue.push_back(item);
        state.pushed.push(item);
        self.readable.notify_all();
    }

    /// The sender's end closes (the kernel does that for a dead one).
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.readable.notify_all();
    }

    /// Nothing pushed is unread (`SIOCOUTQ` is zero).
    pub fn is_empty(&self) -> bool {
        self.state.lock().unwrap().queue.is_empty()
    }

    /// `poll` says readable: items, or the end of the stream.
    pub fn readable_now(&self) -> bool {
        let state = self.state.lock().unwrap();
        !state.queue.is_empty() || state.closed
    }

    /// Everything there once something is, `None` at the end of the
    /// stream; with `one`, only the first item.
    fn take(&self, one: bool) -> Option<Vec<T>> {
        let mut state = self.state.lock().unwrap();
        loop {
            if !state.queue.is_empty() {
                let n = if one { 1 } else { state.queue.len() };
                return Some(state.queue.drain(..n).collect());
            }
            if state.closed {
                return None;
            }
            state = self.readable.wait(state).unwrap();
        }
    }

    /// The next item, waiting for one; `None` at the end of the stream.
    pub fn pop(&self) -> Option<T> {
        self.take(true).map(|items| items[0])
    }

    /// One read: everything there, waiting for something; `None` at the
    /// end of the stream.
    pub fn read(&self) -> Option<Vec<T>> {
        self.take(false)
    }

    /// Everything ever pushed, in order.
    pub fn pushed(&self) -> Vec<T> {
        self.state.lock().unwrap().pushed.clone()
    }
}
