//! `JoinableQueue`'s task count: messages put (the count in tail) less
//! messages marked done (the join line), and the wait for zero.

use multiproc_core::futex::{self, WaitOutcome};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Block, Ring, Stop};
use crate::layout::unpack;
use crate::wake::{self, bell};

impl Ring {
    /// Messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u32 {
        let ctl = self.ctl();
        let done = ctl.join.done.load(Ordering::SeqCst);
        let (tc, _) = unpack(ctl.tail.word.load(Ordering::SeqCst));
        tc.wrapping_sub(done)
    }

    /// Marks one message done; `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let ctl = self.ctl();
        loop {
            let done = ctl.join.done.load(Ordering::SeqCst);
            let (tc, _) = unpack(ctl.tail.word.load(Ordering::SeqCst));
            if tc.wrapping_sub(done) == 0 || tc.wrapping_sub(done) > i32::MAX as u32 {
                return false;
            }
            // SYNC: SeqCst, pairs with the SeqCst re-check in `join`.
            if ctl
                .join
                .done
                .compare_exchange(
                    done,
                    done.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                wake::notify(ctl.word(&ctl.join.join, bell::JOIN));
                return true;
            }
        }
    }

    /// Waits until every message put has been marked done.
    pub(crate) fn join(&self, block: Block) -> Result<(), Stop> {
        if self.unfinished() == 0 {
            return Ok(());
        }
        let Block::Until(deadline) = block else {
            return Err(Stop::WouldBlock);
        };
        let ctl = self.ctl();
        loop {
            let v = wake::prepare_sleep(&ctl.join.join);
            if self.unfinished() == 0 {
                return Ok(());
            }
            if futex::wait(&ctl.join.join, v, wake::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return if self.unfinished() == 0 {
                    Ok(())
                } else {
                    Err(Stop::Timeout)
                };
            }
        }
    }
}
