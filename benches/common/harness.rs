//! Running and timing one cell: forks the partner processes around a
//! [`Link`] ([`Flow`] for throughput, [`RoundTrip`] for ping-pong), shares
//! the control words with them, times batches, and turns timed batches into
//! a median rate ([`measure`]).

use super::peers::{Link, Peer};
use super::runner::{RTT_SIZE, size_label};
use multiproc::Segment;
use multiproc::os::futex;
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
    /// Forks the partners for `peer` with `size`-byte messages.
    pub fn start(peer: &dyn Peer, size: usize, procs: usize) -> Self {
        let ctl = Control::new();
        let mut link = peer.link(size);
        let mut pids = Vec::new();
        for i in 0..procs {
            let (ctl, link) = (&ctl, &mut link);
            pids.push(fork_child(move || {
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
}

impl RoundTrip {
    /// Forks the echo partner for `peer`.
    pub fn start(peer: &dyn Peer) -> Self {
        let mut ping = peer.link(RTT_SIZE);
        let mut pong = peer.link(RTT_SIZE);
        let child = fork_child(|| {
            let mut buf = vec![0u8; RTT_SIZE];
            loop {
                ping.recv(&mut buf);
                pong.send(&buf);
            }
        });
        Self {
            child,
            ping,
            pong,
            msg: vec![1u8; RTT_SIZE],
            buf: vec![0u8; RTT_SIZE],
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
    let mut n = first.max(1);
    // Calibration doubles as warm-up.
    loop {
        let (took, _) = run(n);
        if took >= batch / 4 || n >= 1 << 40 {
            let scale = batch.as_secs_f64() / took.as_secs_f64().max(1e-9);
            n = ((n as f64 * scale) as u64).max(1);
            break;
        }
        n = n.saturating_mul(4);
    }
    let mut rates: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let (took, done) = run(n);
            done as f64 / took.as_secs_f64().max(1e-9)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// A reasonable first batch for `size`-byte messages (about 1 MB moved).
pub fn first_batch(size: usize) -> u64 {
    ((1usize << 20) / size).clamp(4, 100_000) as u64
}
