//! The result thread and the pool's record of its workers: reads the
//! reports, hands tasks out (dispatch), takes back tasks a worker has not
//! started for idle workers, replaces workers that died or retired (with a
//! back-off when they die in the initializer), and winds the pool down.

use multiproc_queue::{PutError, Queue};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::report::{Inbox, Kept, Report, Reports};
use super::result::{TaskError, TransportError, mark_result_thread, on_result_thread};
use super::sinks::{Ready, Sink, Sinks, run_ready, run_sinks};
use super::task::{Call, Received, Task, TaskMessage};
use super::worker::{WorkerArgs, worker_main};
use crate::child::signal_name;
use crate::method::StartMethod;
use crate::process::Process;
use crate::wire::ByteBuf;

/// Tasks handed to one worker ahead of its results: enough that a worker
/// rarely waits for the pool to send its next task, and that the result
/// thread tops workers up in long runs rather than one task at a time
/// (measured with `map` at chunk size 1 on two CPUs: 1.9 M tasks/s with 8,
/// 2.4 M with 32, 2.7 M with 64, 2.8 M with 128). A small task costs a
/// worker's queue some 64 bytes, so 128 of them stay in the caches. Tasks
/// a worker has not started are not bound to it: an idle
/// worker takes them over, and when a worker dies only the task it was
/// running is lost (see [`Pool`'s long tasks](crate::Pool#long-tasks-and-stuck-workers)).
pub const PREFETCH: usize = 128;

/// Ring of a worker's task queue. At most [`PREFETCH`] tasks are in it, so
/// a small ring is enough, and it stays in the caches: the default 64 MiB
/// ring would have every task written to a line nobody touched for a long
/// while (and its pages zeroed by the kernel on first use). Larger tasks
/// still go through, in fragments.
const TASK_RING: usize = 256 << 10;

/// Ring of the report queue, which all workers share; see [`TASK_RING`].
const REPORT_RING: usize = 1 << 20;

/// Most reports the result thread handles under one lock.
const REPORT_BATCH: usize = 64;

/// How often the result thread checks that every worker is alive when no
/// report arrives.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Shortest time between two rounds of taking tasks back for idle workers
/// (see [Design](super#design)). A round costs the result thread a few
/// microseconds (the queue's lock taken from the worker its bias favours,
/// a fence on every CPU); where tasks come one by one and a worker runs dry
/// all the time, this bounds that cost to a small share of the thread. A
/// task stuck behind a long one waits a round longer at most.
pub(super) const STEAL_INTERVAL: Duration = Duration::from_millis(1);

/// How long a closed pool waits for an idle worker to leave before killing it.
const WIND_DOWN_WAIT: Duration = Duration::from_secs(1);

/// Deaths of fresh workers in their initializer in a row, beyond one per
/// worker, after which the initializer counts as failed.
const INIT_DEATHS_BEYOND_WORKERS: u32 = 3;

/// Longest wait before replacing a worker that died in its initializer.
const MAX_RESPAWN_BACKOFF: Duration = Duration::from_secs(1);

pub(super) struct Worker {
    pub(super) process: Process<()>,
    pub(super) tasks: Queue<TaskMessage>,
    /// Tasks handed over and not yet reported, oldest first (kept whole so
    /// unstarted ones can be handed to another worker).
    pub(super) outstanding: VecDeque<Task>,
    pub(super) assigned: u64,
    pub(super) retiring: bool,
    /// Its initializer returned (always, without one).
    pub(super) initialized: bool,
}

impl Worker {
    /// Whether the pool may hand this worker another task.
    fn has_room(&self, max_tasks: Option<u64>) -> bool {
        self.room(PREFETCH, max_tasks) > 0
    }

    /// How many more tasks the pool may hand this worker, up to `up_to`
    /// in all (and at most [`PREFETCH`]).
    fn room(&self, up_to: usize, max_tasks: Option<u64>) -> usize {
        if self.retiring {
            return 0;
        }
        let ahead = up_to.min(PREFETCH).saturating_sub(self.outstanding.len());
        match max_tasks {
            None => ahead,
            Some(k) => {
                ahead.min(usize::try_from(k.saturating_sub(self.assigned)).unwrap_or(usize::MAX))
            }
        }
    }

    /// Puts `task` into this worker's queue and on its list. A task the
    /// queue refuses fails (its sink goes to `failed`). `Err` hands the
    /// task back when the queue is full: the put never waits under the
    /// pool's lock for the worker to make room, except for a worker with
    /// nothing handed over, whose put is then a task larger than its
    /// ring, in fragments.
    fn hand_over(
        &mut self,
        task: Task,
        sinks: &mut Sinks,
        failed: &mut Vec<(Sink, TaskError)>,
    ) -> Result<(), Task> {
        let put = if self.outstanding.is_empty() {
            self.tasks
                .put_bytes(task.message.as_slice())
                .map_err(|e| e.map(drop))
        } else {
            match self.tasks.try_put_bytes(task.message.as_slice()) {
                Ok(()) => Ok(()),
                Err(e) => match PutError::try_from(e.map(drop)) {
                    Ok(e) => Err(e),
                    Err(_full) => return Err(task),
                },
            }
        };
        match put {
            Ok(()) => {
                self.outstanding.push_back(task);
                self.assigned += 1;
            }
            Err(e) => {
                if let Some(sink) = sinks.remove(task.id) {
                    failed.push((
                        sink,
                        TaskError::Transport(TransportError::caused(
                            "handing the task to a worker",
                            e,
                        )),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Takes up to `max` tasks back out of this worker's queue, oldest
    /// first, and off its list. A queue delivers each message once, so a
    /// message the pool gets is one the worker never got: the task has not
    /// started and can go anywhere. The rest of the list keeps the order in
    /// which the worker gets its tasks.
    ///
    /// A live worker may hold its queue's lock, for as long as it is
    /// stopped in there: `Live` never waits for it and takes nothing then.
    /// `Dead` takes the lock over from the dead worker, also when it died
    /// inside by the lock's bias, which a get that never waits gives up on.
    fn take_back(&mut self, max: usize, from: TakeBack) -> Vec<Task> {
        let mut back = Vec::new();
        while back.len() < max && !self.tasks.is_empty() {
            let message = match from {
                TakeBack::Live => self.tasks.try_get_in_place().ok(),
                // The deadline has passed already: one look, and one at the
                // holder of the lock.
                TakeBack::Dead => self.tasks.get_in_place_timeout(Duration::ZERO).ok(),
            };
            let Some(message) = message else {
                break;
            };
            let id = Received::parse(&message).map(|task| task.id);
            // Dropping the message takes it out of the queue.
            drop(message);
            // A task that is not on the list has had its outcome already
            // (the pool failed it with the initializer): dropped.
            let at = id.and_then(|id| self.outstanding.iter().position(|t| t.id == id));
            if let Some(task) = at.and_then(|at| self.outstanding.remove(at)) {
                self.assigned = self.assigned.saturating_sub(1);
                back.push(task);
            }
        }
        back
    }
}

/// Whose queue [`Worker::take_back`] empties.
#[derive(Clone, Copy)]
enum TakeBack {
    /// A worker that may be running, or stopped anywhere.
    Live,
    /// A worker that has exited.
    Dead,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) next_id: u64,
    pub(super) pending: VecDeque<Task>,
    pub(super) sinks: Sinks,
    pub(super) workers: Vec<Worker>,
    pub(super) closed: bool,
    pub(super) terminated: bool,
    pub(super) broken: Option<String>,
    pub(super) finished: bool,
    /// Workers that died in their initializer since one last got through it.
    pub(super) init_deaths: u32,
    /// No worker is started before then (back-off after `init_deaths`).
    pub(super) respawn_at: Option<Instant>,
}

impl State {
    /// Closes every worker's task queue: each leaves once it sees that.
    pub(super) fn let_workers_go(&mut self) {
        for w in &mut self.workers {
            if !w.retiring {
                w.retiring = true;
                w.tasks.close();
            }
        }
    }
}

pub(super) struct Config {
    pub(super) processes: usize,
    pub(super) init: Option<(Call, Vec<u8>)>,
    pub(super) max_tasks: Option<u64>,
    pub(super) method: StartMethod,
}

/// Hands out pool ids (0 is none).
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

pub(super) struct Shared {
    /// This pool's id, to recognise its result thread.
    pub(super) id: u64,
    /// Callbacks that panicked so far.
    pub(super) callback_panics: Arc<AtomicU64>,
    pub(super) state: Mutex<State>,
    pub(super) finished: Condvar,
    pub(super) reports: Reports,
    pub(super) config: Config,
}

impl Shared {
    /// A pool with no workers yet and its report queue.
    pub(super) fn new(config: Config) -> io::Result<Self> {
        Ok(Self {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            callback_panics: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            reports: Reports::new(REPORT_RING).map_err(io::Error::other)?,
            config,
        })
    }

    /// Whether the calling thread is this pool's result thread.
    #[inline]
    pub(super) fn on_result_thread(&self) -> bool {
        on_result_thread(self.id)
    }

    #[inline]
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn spawn_worker(&self) -> io::Result<Worker> {
        let tasks = Queue::builder()
            .ring_bytes(TASK_RING)
            .build()
            .map_err(io::Error::other)?;
        let args = WorkerArgs {
            tasks: tasks.clone(),
            reports: self.reports.clone(),
            init: self
                .config
                .init
                .as_ref()
                .map(|(call, bytes)| (*call, ByteBuf(bytes.clone()))),
        };
        let process = Process::new(worker_main, args)
            .name("PoolWorker")
            .daemon(true)
            .start_method(self.config.method)
            .start()?;
        Ok(Worker {
            process,
            tasks,
            outstanding: VecDeque::new(),
            assigned: 0,
            retiring: false,
            initialized: self.config.init.is_none(),
        })
    }

    /// Undoes a `build` that failed with `error`: stops and reaps the
    /// workers started so far and closes the report queue; returns the
    /// error to give the caller.
    pub(super) fn abandon(&self, workers: Vec<Worker>) {
        for w in &workers {
            w.tasks.close();
            let _ = w.process.kill();
        }
        for mut w in workers {
            let _ = w.process.join();
        }
        self.reports.close();
    }

    /// Hands pending tasks to workers with room, each to the least loaded
    /// (so idle workers start before busy ones get a second task), until
    /// each has `up_to` tasks (at most [`PREFETCH`]). A worker whose queue
    /// is full gets no more this round. Returns sinks of tasks the queue
    /// refused.
    pub(super) fn dispatch(&self, state: &mut State, up_to: usize) -> Vec<(Sink, TaskError)> {
        let mut failed = Vec::new();
        let max = self.config.max_tasks;
        let State {
            workers,
            pending,
            sinks,
            ..
        } = state;
        let room: usize = workers.iter().map(|w| w.room(up_to, max)).sum();
        if pending.len() >= room {
            // Every worker gets all it has room for: nothing to choose per
            // task (a `map` keeps the pool here).
            for worker in workers.iter_mut() {
                for _ in 0..worker.room(up_to, max) {
                    let Some(task) = pending.pop_front() else {
                        break;
                    };
                    if let Err(task) = worker.hand_over(task, sinks, &mut failed) {
                        pending.push_front(task);
                        break;
                    }
                }
            }
            return failed;
        }
        // Fewer tasks than room: each to the least loaded.
        let mut full = vec![false; workers.len()];
        while !pending.is_empty() {
            let Some((index, worker)) = workers
                .iter_mut()
                .enumerate()
                .filter(|(i, w)| !full[*i] && w.room(up_to, max) > 0)
                .min_by_key(|(_, w)| w.outstanding.len())
            else {
                break;
            };
            let Some(task) = pending.pop_front() else {
                break;
            };
            if let Err(task) = worker.hand_over(task, sinks, &mut failed) {
                full[index] = true;
                pending.push_front(task);
            }
        }
        failed
    }

    /// Whether a worker that could run a task has none, and nothing is
    /// pending, while another worker has tasks it has not started (all but
    /// the oldest of its list, perhaps). Cheap: the result thread asks
    /// after every batch of reports.
    fn idle_beside_backlog(&self, state: &State) -> bool {
        let max = self.config.max_tasks;
        state.pending.is_empty()
            && state
                .workers
                .iter()
                .any(|w| w.outstanding.is_empty() && w.has_room(max))
            && state.workers.iter().any(|w| w.outstanding.len() >= 2)
    }

    /// One round of taking tasks back for idle workers: for each idle one,
    /// half the list of the worker with the longest, taken out of its
    /// queue (only tasks it has not started come out) and put back in
    /// front of the pending ones; `dispatch` then hands them to the least
    /// loaded workers, the idle ones first. The worker keeps at least as
    /// many as any idle one gets, so tasks do not go back and forth.
    /// Returns whether any task came back.
    fn take_back_for_idle(&self, state: &mut State) -> bool {
        let max = self.config.max_tasks;
        let idle = state
            .workers
            .iter()
            .filter(|w| w.outstanding.is_empty() && w.has_room(max))
            .count();
        let mut back = Vec::new();
        for _ in 0..idle {
            let Some(busy) = state
                .workers
                .iter_mut()
                .filter(|w| w.outstanding.len() >= 2)
                .max_by_key(|w| w.outstanding.len())
            else {
                break;
            };
            let half = busy.outstanding.len() / 2;
            let taken = busy.take_back(half, TakeBack::Live);
            if taken.is_empty() {
                // Busy with its queue (or stopped there): next round.
                break;
            }
            back.extend(taken);
        }
        let any = !back.is_empty();
        for task in back.into_iter().rev() {
            state.pending.push_front(task);
        }
        any
    }

    /// The result thread.
    pub(super) fn run(self: Arc<Self>) {
        mark_result_thread(self.id);
        let mut last_check = Instant::now();
        let mut next_steal = last_check;
        // Both reused from round to round: no allocation per report.
        let mut inbox = Inbox::default();
        let mut ready: Vec<Ready> = Vec::new();
        loop {
            inbox.clear();
            let first = inbox.take_timeout(&self.reports, CHECK_INTERVAL);
            let mut state = self.lock();
            match first {
                Ok(at) => {
                    self.handle(&mut state, &inbox, at, &mut ready);
                    // Reports that are already there are handled under the
                    // same lock, with one dispatch for all of them.
                    for _ in 1..REPORT_BATCH {
                        let Some(at) = inbox.try_take(&self.reports) else {
                            break;
                        };
                        self.handle(&mut state, &inbox, at, &mut ready);
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => {
                    // Closed by `terminate` (or broken): stop.
                    state.finished = true;
                    self.finished.notify_all();
                    return;
                }
            }
            if state.terminated {
                drop(state);
                run_ready(&mut ready, &inbox);
                continue;
            }
            if last_check.elapsed() >= CHECK_INTERVAL {
                last_check = Instant::now();
                self.check_workers(&mut state, &mut inbox, &mut ready);
            }
            let mut failed = self.dispatch(&mut state, PREFETCH);
            if self.idle_beside_backlog(&state) {
                let now = Instant::now();
                if now >= next_steal {
                    next_steal = now + STEAL_INTERVAL;
                    if self.take_back_for_idle(&mut state) {
                        failed.extend(self.dispatch(&mut state, PREFETCH));
                    }
                }
            }
            let done = self.wind_down(&mut state);
            drop(state);
            // Results are delivered before `join` may return.
            run_ready(&mut ready, &inbox);
            run_sinks(failed);
            if done {
                self.lock().finished = true;
                self.finished.notify_all();
                return;
            }
        }
    }

    /// Takes in the report at `at`: the task is off its worker's list, and
    /// its sink goes to `ready` with the outcome.
    fn handle(&self, state: &mut State, inbox: &Inbox, at: Kept, ready: &mut Vec<Ready>) {
        let Some(report) = inbox.report(at) else {
            return;
        };
        match report {
            Report::Done { id, worker, result } => {
                if let Some(w) = state.workers.iter_mut().find(|w| w.process.pid() == worker) {
                    // A worker runs its tasks in the order it got them:
                    // the finished one is the oldest.
                    if w.outstanding.front().is_some_and(|t| t.id == id) {
                        w.outstanding.pop_front();
                    } else {
                        w.outstanding.retain(|t| t.id != id);
                    }
                    if self.config.max_tasks.is_some_and(|k| w.assigned >= k)
                        && w.outstanding.is_empty()
                    {
                        w.retiring = true;
                        w.tasks.close();
                    }
                }
                if let Some(sink) = state.sinks.remove(id) {
                    let outcome = match result {
                        Ok(_) => Ok(at),
                        Err(why) => Err(TaskError::Transport(TransportError::message(
                            why.into_owned(),
                        ))),
                    };
                    ready.push((sink, outcome));
                }
                self.replace_retiring(state);
            }
            Report::InitFailed { worker: 0, .. } => {} // a wake-up from `close`
            Report::InitFailed { message, .. } => fail_initializer(state, &message, ready),
            Report::Ready { worker } => {
                if let Some(w) = state.workers.iter_mut().find(|w| w.process.pid() == worker) {
                    w.initialized = true;
                }
                state.init_deaths = 0;
                state.respawn_at = None;
            }
        }
    }

    /// Keeps `processes` workers that are not retiring.
    fn replace_retiring(&self, state: &mut State) {
        let active = state.workers.iter().filter(|w| !w.retiring).count();
        if state.broken.is_some() || state.terminated || (state.closed && state.pending.is_empty())
        {
            return;
        }
        if state.respawn_at.is_some_and(|at| Instant::now() < at) {
            return; // backing off; retried at a later check
        }
        for _ in active..self.config.processes {
            match self.spawn_worker() {
                Ok(worker) => state.workers.push(worker),
                Err(_) => break, // retried at the next check
            }
        }
    }

    /// Reaps workers that exited; fails the task a dead worker was running,
    /// hands the tasks it had not started to the rest, and replaces it.
    fn check_workers(&self, state: &mut State, inbox: &mut Inbox, ready: &mut Vec<Ready>) {
        if state.workers.iter().all(|w| w.process.is_alive()) {
            self.replace_retiring(state);
            return;
        }
        // Reports a worker sent just before dying are taken first.
        while let Some(at) = inbox.try_take(&self.reports) {
            self.handle(state, inbox, at, ready);
        }
        let mut index = 0;
        while index < state.workers.len() {
            if state.workers[index].process.is_alive() {
                index += 1;
                continue;
            }
            let mut dead = state.workers.swap_remove(index);
            let exitcode = dead.process.exitcode().unwrap_or(0);
            // Whatever is still in its queue it never got: those tasks go
            // back as they are. It runs its tasks one at a time, taking the
            // next only after reporting the last, and its reports are in:
            // what is left on its list is the task it was running, if any.
            let unstarted = dead.take_back(usize::MAX, TakeBack::Dead);
            if dead.initialized
                && let Some(running) = dead.outstanding.pop_front()
                && let Some(sink) = state.sinks.remove(running.id)
            {
                let signal = (exitcode < 0).then(|| signal_name(-exitcode));
                ready.push((sink, Err(TaskError::WorkerDied { exitcode, signal })));
            }
            // Should its queue not have given everything back, the rest of
            // the list had not started either (one task at a time). A
            // worker that died in its initializer started none.
            let stranded = dead.outstanding.drain(..).chain(unstarted);
            for task in stranded.collect::<Vec<_>>().into_iter().rev() {
                state.pending.push_front(task);
            }
            if !dead.initialized {
                self.initializer_died(state, exitcode, ready);
            }
        }
        self.replace_retiring(state);
    }

    /// A fresh worker died in its initializer (killed, aborted, exited):
    /// its replacement waits a little longer each time, and after a few in
    /// a row the initializer counts as failed, as when it panics.
    fn initializer_died(&self, state: &mut State, exitcode: i32, ready: &mut Vec<Ready>) {
        if state.broken.is_some() {
            return; // reported by the worker already
        }
        state.init_deaths += 1;
        let workers = u32::try_from(self.config.processes).unwrap_or(u32::MAX);
        if state.init_deaths >= workers.saturating_add(INIT_DEATHS_BEYOND_WORKERS) {
            let how = if exitcode < 0 {
                format!("killed by {}", signal_name(-exitcode))
            } else {
                format!("exited with code {exitcode}")
            };
            let message = format!(
                "{} workers in a row died in the initializer, the last {how}",
                state.init_deaths
            );
            fail_initializer(state, &message, ready);
            return;
        }
        let backoff = CHECK_INTERVAL
            .saturating_mul(1 << state.init_deaths.min(10))
            .min(MAX_RESPAWN_BACKOFF);
        state.respawn_at = Some(Instant::now() + backoff);
    }

    /// After `close`: once every task is done, lets the workers go; true
    /// when they all have.
    fn wind_down(&self, state: &mut State) -> bool {
        if !(state.closed || state.broken.is_some())
            || !state.sinks.is_empty()
            || !state.pending.is_empty()
        {
            return false;
        }
        state.let_workers_go();
        // Every task is done: the workers leave as soon as they see their
        // queue closed. Wait for them here rather than polling.
        for mut w in std::mem::take(&mut state.workers) {
            if w.process.join_timeout(WIND_DOWN_WAIT).is_err() && w.process.is_alive() {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
        true
    }
}

/// The initializer failed (`message`): every task fails with
/// [`TaskError::InitializerFailed`], later ones are refused, and the
/// workers are let go.
fn fail_initializer(state: &mut State, message: &str, ready: &mut Vec<Ready>) {
    state.broken = Some(message.to_owned());
    let mut stranded = std::mem::take(&mut state.pending);
    for w in &mut state.workers {
        stranded.extend(w.outstanding.drain(..));
    }
    for task in stranded {
        if let Some(sink) = state.sinks.remove(task.id) {
            ready.push((sink, Err(TaskError::InitializerFailed(message.to_owned()))));
        }
    }
    state.let_workers_go();
}
