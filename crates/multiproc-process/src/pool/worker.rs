//! The worker process: takes tasks from its own queue, runs them, reports.
#![allow(unsafe_code)]

use multiproc_queue::Queue;
use serde::{Deserialize, Serialize};

use super::report::{Report, Reports};
use super::task::{Call, Received, TaskMessage};
use crate::wire::ByteBuf;

/// Everything a worker needs; its target's argument.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) tasks: Queue<TaskMessage>,
    pub(crate) reports: Reports,
    pub(crate) init: Option<(Call, ByteBuf)>,
}

/// The worker's body. Returns when its task queue is closed (the pool is
/// done with it, or it reached `maxtasksperchild`).
pub(crate) fn worker_main(args: WorkerArgs) {
    let me = std::process::id();
    // One buffer for every task's encoded results: no allocation per task.
    let mut results = Vec::new();
    if let Some((call, init_args)) = &args.init {
        // The initializer's "result" is one `()` per call; a panic in it is
        // reported and ends the worker.
        // SAFETY: `call` was made by `Call::new` in the pool
        // (`PoolBuilder::initializer`), and this worker runs the pool's
        // executable: `Process` checks the executable's identity before a
        // spawned or fork-server child runs its target, and a forked worker
        // is a copy of the pool's process.
        let failure = match unsafe { call.run(&init_args.0, &mut results) } {
            Err(message) => Some(message),
            Ok(()) => match multiproc_core::codec::decode::<Vec<Result<(), String>>>(&results) {
                Ok(results) => results.into_iter().find_map(Result::err),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(message) = failure {
            args.reports.put(&Report::InitFailed {
                worker: me,
                message: message.into(),
            });
            return;
        }
        // The pool counts a worker that dies before this as killed by its
        // initializer.
        if !args.reports.put(&Report::Ready { worker: me }) {
            return;
        }
    }
    // One buffer for every task message: no allocation per task.
    let mut message = Vec::new();
    while args.tasks.get_bytes_into(&mut message).is_ok() {
        let Some(task) = Received::parse(&message) else {
            // Only the pool writes this queue; a short message means the
            // segment is corrupt, and no report could name the task.
            return;
        };
        // SAFETY: only the pool writes this queue, and its messages come
        // from `Task::encode`, whose `Call` was made by `Call::new` or
        // `Call::new2` in the pool; this worker runs the pool's executable,
        // as for the initializer above.
        let ran = unsafe { task.call.run(task.args, &mut results) };
        let report = Report::Done {
            id: task.id,
            worker: me,
            result: match &ran {
                Ok(()) => Ok(&results),
                Err(message) => Err(message.into()),
            },
        };
        if !args.reports.put(&report) {
            return;
        }
    }
}
