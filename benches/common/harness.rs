//! Running and timing one cell: forks the partner processes around a
//! [`Link`] ([`Flow`] for throughput, [`RoundTrip`] for ping-pong), shares
//! the control words with them, times batches, and turns timed batches into
//! a median rate ([`measure`]).

use super::batch::calibrate;
use super::peers::{Link, Peer};
use super::runner::{Case, RTT_SIZE, size_label};
use multiproc::Segment;
use multiproc::os::futex;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use multiproc_testkit::{ForkedChild, fork_child, kill_children};

/// Whether a child has exited (a crashed partner must not hang the run);
/// reaps it if so.
fn any_exited(children: &mut [ForkedChild]) -> bool {
    children.iter_mut().any(ForkedChild::has_exited)
}

/// Control words shared with the forked partners: 0 round number (futex
/// word), 8 messages per producer this round, 64 (with one consumer) the
/// count at which the round ends, 72 bumped by that consumer when it gets
/// there (futex word), 128 + 128·i messages consumer i received so far.
struct Control(Segment);

impl Control {
    fn new() -> Self {
        Self(Segment::anonymous(4096).expect("segment"))
    }
    fn round(&self) -> &AtomicU32 {
        self.0.atomic_u32(0).expect("word")
    }
    fn count(&self) -> &AtomicU64 {
        self.0.view(8).expect("word")
    }
    fn goal(&self) -> &AtomicU64 {
        self.0.view(64).expect("word")
    }
    fn finished(&self) -> &AtomicU32 {
        self.0.atomic_u32(72).expect("word")
    }
    fn consumed(&self, i: usize) -> &AtomicU64 {
        self.0.view(128 + 128 * i).expect("word")
    }
}

/// Where the partners of a cell run. The machine has two regimes: when
/// the partners share a CPU a hand-off is a context switch (a few µs);
/// when each has its own, idle one, every sleep costs a cross-CPU wake-up
/// (20–80 µs on a virtual machine). A transport has to win in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the kernel puts them.
    Kernel,
    /// Every partner pinned to the same CPU.
    OneCpu,
    /// The sending side (producers; a round trip's caller) on one CPU, the
    /// receiving side (consumers; the echo) on another.
    TwoCpus,
}

/// Which side of a cell a partner is on, for [`Placement`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Send,
    Receive,
}

impl Placement {
    /// In table order.
    pub const ALL: [Self; 3] = [Self::Kernel, Self::OneCpu, Self::TwoCpus];

    pub fn label(self) -> &'static str {
        match self {
            Self::Kernel => "kernel's placement",
            Self::OneCpu => "one CPU",
            Self::TwoCpus => "two CPUs",
        }
    }

    /// Whether this machine can place partners so (two CPUs need two
    /// allowed CPUs).
    pub fn possible(self) -> bool {
        self != Self::TwoCpus || allowed_cpus().len() >= 2
    }

    /// The CPUs of the sending and of the receiving side (`None`: where
    /// the kernel puts it), for partners this harness does not fork.
    pub fn cpus(self) -> (Option<usize>, Option<usize>) {
        (self.cpu(Side::Send), self.cpu(Side::Receive))
    }

    /// The CPU of `side`, if it is pinned.
    fn cpu(self, side: Side) -> Option<usize> {
        let cpus = allowed_cpus();
        match (self, side) {
            (Self::Kernel, _) => None,
            (Self::OneCpu, _) | (Self::TwoCpus, Side::Send) => Some(cpus[0]),
            (Self::TwoCpus, Side::Receive) => cpus.get(1).copied(),
        }
    }

    /// Pins the calling thread as `side` asks; returns the mask it had.
    fn pin(self, side: Side) -> Option<rustix::thread::CpuSet> {
        let cpu = self.cpu(side)?;
        let before = rustix::thread::sched_getaffinity(None).ok()?;
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).expect("pin to an allowed CPU");
        Some(before)
    }
}

/// The CPUs this process may run on, lowest first (read once, before any
/// pinning).
fn allowed_cpus() -> &'static [usize] {
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| {
        let set = rustix::thread::sched_getaffinity(None).expect("affinity");
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect()
    })
}

/// `procs` producers and `procs` consumers forked around one link.
pub struct Flow {
    pids: Vec<ForkedChild>,
    ctl: Control,
    procs: usize,
    target: u64,
    what: String,
    // Dropped after the children are killed (see `Drop`).
    _link: Box<dyn Link>,
}

impl Flow {
    /// Forks the partners for `peer` with `size`-byte messages, where the
    /// kernel puts them.
    pub fn start(peer: &dyn Peer, size: usize, procs: usize) -> Self {
        Self::start_placed(peer, size, procs, Placement::Kernel)
    }

    /// [`start`](Self::start), the partners placed as `placement` says
    /// (the bench process, which only starts rounds and sleeps, stays
    /// where it is).
    pub fn start_placed(peer: &dyn Peer, size: usize, procs: usize, placement: Placement) -> Self {
        allowed_cpus();
        let ctl = Control::new();
        let mut link = peer.link(size);
        let mut pids = Vec::new();
        for i in 0..procs {
            let (ctl, link) = (&ctl, &mut link);
            pids.push(fork_child(move || {
                placement.pin(Side::Receive);
                let mut buf = vec![0u8; size];
                let (done, goal, finished) = (ctl.consumed(i), ctl.goal(), ctl.finished());
                let mut n = 0u64;
                loop {
                    link.recv(&mut buf);
                    n += 1;
                    done.store(n, Ordering::Release);
                    if n == goal.load(Ordering::Relaxed) {
                        finished.fetch_add(1, Ordering::Release);
                        futex::wake_all(finished);
                    }
                }
            }));
        }
        for _ in 0..procs {
            let (ctl, link) = (&ctl, &mut link);
            pids.push(fork_child(move || {
                placement.pin(Side::Send);
                let payload = vec![7u8; size];
                let mut seen = 0;
                loop {
                    seen = futex::wait_until(ctl.round(), None, |v| v != seen).expect("wait");
                    let count = ctl.count().load(Ordering::Acquire);
                    for _ in 0..count {
                        link.send(&payload);
                    }
                }
            }));
        }
        Self {
            pids,
            ctl,
            procs,
            target: 0,
            what: format!("{} {procs}→{procs} {}", peer.key(), size_label(size)),
            _link: link,
        }
    }

    /// Moves about `messages` messages (rounded up to a multiple of the
    /// producer count) and returns the time from the start signal until the
    /// consumers have all of them, with the message count.
    pub fn run_counted(&mut self, messages: u64) -> (Duration, u64) {
        let per = messages.div_ceil(self.procs as u64).max(1);
        let total = per * self.procs as u64;
        self.target += total;
        // With one consumer, the consumer wakes us at the end of the round,
        // and we look at the counters only once a second. A bench process
        // that looks every 50 µs keeps preempting a partner on a machine
        // with no more CPUs than partners, which decides which side runs
        // ahead (measured: the queue's 8 B figure moved by a factor of 2–3
        // with it). With two consumers we still look every 50 µs.
        let quiet = self.procs == 1;
        if quiet {
            self.ctl.goal().store(self.target, Ordering::Relaxed);
        }
        let start = Instant::now();
        self.ctl.count().store(per, Ordering::Release);
        self.ctl.round().fetch_add(1, Ordering::Release);
        futex::wake_all(self.ctl.round());
        let mut last = (0, Instant::now());
        loop {
            if quiet {
                let consumed = self.ctl.consumed(0);
                let slice = Some(Instant::now() + Duration::from_secs(1));
                let _ = futex::wait_until(self.ctl.finished(), slice, |_| {
                    consumed.load(Ordering::Acquire) >= self.target
                });
            }
            let got: u64 = (0..self.procs)
                .map(|i| self.ctl.consumed(i).load(Ordering::Acquire))
                .sum();
            if got >= self.target {
                return (start.elapsed(), total);
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) && any_exited(&mut self.pids) {
                panic!("{}: a partner process died", self.what);
            } else if last.1.elapsed() > Duration::from_secs(60) {
                panic!("{}: no progress for a minute", self.what);
            }
            if !quiet {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// [`run_counted`](Self::run_counted) for criterion's `iter_custom`
    /// (the count is `messages` whenever it divides by the producer count).
    pub fn run(&mut self, messages: u64) -> Duration {
        self.run_counted(messages).0
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        kill_children(&mut self.pids);
    }
}

/// An echo process forked around two links: `ping` there, `pong` back.
pub struct RoundTrip {
    child: ForkedChild,
    ping: Box<dyn Link>,
    pong: Box<dyn Link>,
    msg: Vec<u8>,
    buf: Vec<u8>,
    /// The calling thread's mask before it was pinned, put back on drop.
    unpin: Option<rustix::thread::CpuSet>,
}

impl RoundTrip {
    /// Forks the echo partner for `peer`, where the kernel puts it.
    pub fn start(peer: &dyn Peer) -> Self {
        Self::start_placed(peer, Placement::Kernel)
    }

    /// [`start`](Self::start), this thread and the echo placed as
    /// `placement` says (this thread until the round trip is dropped).
    pub fn start_placed(peer: &dyn Peer, placement: Placement) -> Self {
        allowed_cpus();
        let mut ping = peer.link(RTT_SIZE);
        let mut pong = peer.link(RTT_SIZE);
        let child = fork_child(|| {
            placement.pin(Side::Receive);
            let mut buf = vec![0u8; RTT_SIZE];
            loop {
                ping.recv(&mut buf);
                pong.send(&buf);
            }
        });
        let unpin = placement.pin(Side::Send);
        Self {
            child,
            ping,
            pong,
            msg: vec![1u8; RTT_SIZE],
            buf: vec![0u8; RTT_SIZE],
            unpin,
        }
    }

    /// `n` round trips, blocking API; returns the total time.
    pub fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.ping.send(&self.msg);
            self.pong.recv(&mut self.buf);
        }
        start.elapsed()
    }
}

impl Drop for RoundTrip {
    fn drop(&mut self) {
        self.child.kill();
        if let Some(mask) = &self.unpin {
            let _ = rustix::thread::sched_setaffinity(None, mask);
        }
    }
}

/// Operations per second of a timed run: calibrates a batch to about
/// `batch` of wall time starting from `first` operations, then runs
/// `rounds` batches and returns the median rate.
pub fn measure(
    mut run: impl FnMut(u64) -> (Duration, u64),
    first: u64,
    batch: Duration,
    rounds: usize,
) -> f64 {
    // Calibration doubles as warm-up.
    let Ok(n) = calibrate(|n| Ok::<_, Infallible>(run(n).0), first, batch);
    let rates: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let (took, done) = run(n);
            done as f64 / took.as_secs_f64().max(1e-9)
        })
        .collect();
    median(&rates)
}

/// The median of `rates` (the upper one of an even count).
///
/// # Panics
///
/// When `rates` is empty.
pub fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A reasonable first count for `case`: [`first_batch`] messages for a
/// flow, 64 round trips.
pub fn first_count(case: Case) -> u64 {
    match case {
        Case::Flow { size, .. } => first_batch(size),
        Case::RoundTrip => 64,
    }
}

/// A reasonable first batch for `size`-byte messages (about 1 MB moved).
pub fn first_batch(size: usize) -> u64 {
    ((1usize << 20) / size).clamp(4, 100_000) as u64
}
