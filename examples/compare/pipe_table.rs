//! The Pipe's table: multiproc's `Pipe` against the kernel's socketpair
//! (raw and framed) and Python's `multiprocessing.Pipe`, in every
//! placement, the contenders alternated.
//!
//! Where the kernel places a pair, one measurement gets a shared CPU and the
//! next two CPUs, a difference of up to fivefold at 64 KiB; a ratio of two
//! single measurements compares two draws. So each cell here is measured in
//! rounds ([`PIPE_ROUNDS`], or [`PIPE_ROUNDS_KERNEL`] where the kernel
//! places the partners), every round starting every contender afresh (a
//! new draw of the placement) in a balanced order
//! ([`multiproc_testkit::balanced_order`]: each runs right after each
//! other equally often), and a rate is the median of its rounds. Python's Pipe runs in one
//! `benches/python_mp.py --serve` process, asked for one run at a time, so
//! it alternates with the others and is placed the same way.

use super::common::{Case, Flow, FramedSocketpair, Placement, RoundTrip, median, peers};
use super::rounds::{one_round, ratio_range};
use multiproc_testkit::balanced_order;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{self, BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Rounds per cell with the partners pinned; a rate is the median of its
/// rounds.
pub const PIPE_ROUNDS: usize = 7;
/// Rounds per cell left to the kernel: each round there is one draw from a
/// mixture of placements (a run at 64 KiB made from 0.65 to 2.4 times the
/// socketpair's rate of its round), so these cells get more of them.
pub const PIPE_ROUNDS_KERNEL: usize = 15;

/// The contenders, in column order: (key, heading).
const CONTENDERS: [(&str, &str); 4] = [
    ("pipe", "multiproc Pipe"),
    ("socketpair", "socketpair"),
    ("framed_socketpair", "framed socketpair"),
    ("python_pipe", "Python Pipe"),
];

/// Ratio columns: (ours, theirs, heading). The last says how far the
/// kernel's own floor is ahead of Python's Pipe: what a Pipe that moves
/// its bytes through the socket can reach at most, give or take the
/// framing.
const RATIOS: [(&str, &str, &str); 4] = [
    ("pipe", "socketpair", "Pipe ÷ socketpair"),
    ("pipe", "framed_socketpair", "Pipe ÷ framed socketpair"),
    ("pipe", "python_pipe", "Pipe ÷ Python Pipe"),
    ("socketpair", "python_pipe", "socketpair ÷ Python Pipe"),
];

/// The rates of every round per (case, placement index in
/// [`Placement::ALL`], contender key).
pub type PipeRounds = BTreeMap<(Case, usize, &'static str), Vec<f64>>;

/// Measures the table: the 1→1 flows at 8 B, 64 KiB and 1 MiB and the
/// round trip, in every placement the machine allows, each contender
/// [`PIPE_ROUNDS`] times ([`PIPE_ROUNDS_KERNEL`] where the kernel places
/// them; `smoke`: the 8 B flow, once, without Python).
/// `python` runs Python's Pipe (`None`: the column stays empty).
pub fn run_pipe_table(smoke: bool, batch: Duration, python: Option<&Path>) -> PipeRounds {
    let mut rust = peers();
    rust.push(Box::new(FramedSocketpair));
    let mut server = match python.filter(|_| !smoke).map(PythonPipe::start) {
        Some(Ok(server)) => Some(server),
        Some(Err(err)) => {
            eprintln!("[pipe] Python's Pipe not run: {err}");
            None
        }
        None => None,
    };
    let cases: Vec<Case> = if smoke {
        vec![Case::Flow { size: 8, procs: 1 }]
    } else {
        [8, 64 * 1024, 1 << 20]
            .map(|size| Case::Flow { size, procs: 1 })
            .into_iter()
            .chain([Case::RoundTrip])
            .collect()
    };
    let mut table = PipeRounds::new();
    for &case in &cases {
        for (pi, placement) in Placement::ALL.into_iter().enumerate() {
            if !placement.possible() {
                continue;
            }
            let rounds = match (smoke, placement) {
                (true, _) => 1,
                (false, Placement::Kernel) => PIPE_ROUNDS_KERNEL,
                (false, _) => PIPE_ROUNDS,
            };
            // Messages per timed run, per contender, found in its first round.
            let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
            for round in 0..rounds {
                for i in 0..CONTENDERS.len() {
                    let (key, _) = CONTENDERS[balanced_order(round, i, CONTENDERS.len())];
                    let rate = if key == "python_pipe" {
                        let Some(python) = server.as_mut() else {
                            continue;
                        };
                        let rate = one_round(&mut sizes, key, case, batch, |n| {
                            python.run(case, placement, n)
                        });
                        match rate {
                            Ok(rate) => rate,
                            Err(err) => {
                                eprintln!("[pipe] Python's Pipe left out from here on: {err}");
                                server = None;
                                continue;
                            }
                        }
                    } else {
                        let peer = rust.iter().find(|p| p.key() == key).expect("a peer");
                        let mut run: Box<dyn FnMut(u64) -> Duration> = match case {
                            Case::Flow { size, procs } => {
                                let mut flow =
                                    Flow::start_placed(peer.as_ref(), size, procs, placement);
                                Box::new(move |n| flow.run(n))
                            }
                            Case::RoundTrip => {
                                let mut rtt = RoundTrip::start_placed(peer.as_ref(), placement);
                                Box::new(move |n| rtt.run(n))
                            }
                        };
                        let Ok(rate) = one_round(&mut sizes, key, case, batch, |n| {
                            Ok::<_, Infallible>(run(n))
                        });
                        rate
                    };
                    table.entry((case, pi, key)).or_default().push(rate);
                }
            }
            let median = |key| table.get(&(case, pi, key)).map(|r| median(r));
            let spread = per_round_ratios(&table, case, pi);
            eprintln!(
                "[pipe] {:<16} {:<20} Pipe {:>11}  socketpair {:>11}  Python {:>11}  \
                 Pipe ÷ socketpair by round {spread}",
                case.label(),
                placement.label(),
                super::cell(case, median("pipe")),
                super::cell(case, median("socketpair")),
                super::cell(case, median("python_pipe")),
            );
        }
    }
    table
}

/// `min–max` of the Pipe ÷ socketpair ratios of a cell's rounds (the two
/// runs of a round are at most two runs apart).
fn per_round_ratios(table: &PipeRounds, case: Case, pi: usize) -> String {
    let (Some(pipe), Some(floor)) = (
        table.get(&(case, pi, "pipe")),
        table.get(&(case, pi, "socketpair")),
    ) else {
        return "—".to_string();
    };
    ratio_range(pipe, floor)
}

/// The table as Markdown: median rates and the ratios of the medians.
pub fn pipe_table(table: &PipeRounds) -> String {
    let rows = table.keys().map(|&(c, p, _)| (c, p)).collect();
    super::by_placement_markdown(rows, &CONTENDERS, &RATIOS, |case, pi, key| {
        table.get(&(case, pi, key)).map(|r| median(r))
    })
}

/// Python's Pipe, measured by `benches/python_mp.py --serve` one run at a
/// time.
struct PythonPipe {
    child: Child,
    ask: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl PythonPipe {
    fn start(python: &Path) -> io::Result<Self> {
        let mut child = Command::new(python)
            .arg(super::python_script())
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let ask = child.stdin.take().expect("piped stdin");
        let answers = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Self {
            child,
            ask,
            answers,
        })
    }

    /// One run of `n` messages (or round trips) of `case`, placed as
    /// `placement` says; the time it took, as Python measured it.
    fn run(&mut self, case: Case, placement: Placement, n: u64) -> io::Result<Duration> {
        let (send_cpu, recv_cpu) = placement.cpus();
        let ask = match case {
            Case::Flow { size, .. } => serde_json::json!({
                "case": "flow", "size": size, "n": n,
                "send_cpu": send_cpu, "recv_cpu": recv_cpu,
            }),
            Case::RoundTrip => serde_json::json!({
                "case": "rtt", "n": n, "send_cpu": send_cpu, "recv_cpu": recv_cpu,
            }),
        };
        writeln!(self.ask, "{ask}")?;
        self.ask.flush()?;
        let mut line = String::new();
        if self.answers.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the Python server left",
            ));
        }
        let answer: serde_json::Value = serde_json::from_str(&line).map_err(io::Error::other)?;
        answer["seconds"]
            .as_f64()
            .map(Duration::from_secs_f64)
            .ok_or_else(|| io::Error::other(format!("no time in {line:?}")))
    }
}

impl Drop for PythonPipe {
    fn drop(&mut self) {
        // Between runs the server only waits for the next request.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
