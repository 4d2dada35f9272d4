//! multiproc's `Queue` and `Pipe` against every peer and the machine's
//! floors, measured in one short run, as one table.
//!
//! Runs a short version of `benches/queue_vs_pipe.rs` (the same scenarios
//! and peers, from `benches/common`, with simple timing loops instead of
//! criterion) plus `benches/python_mp.py --quick` when `python3` exists,
//! prints one line per case on stderr while it runs, then the table on
//! stdout. It also writes the table as Markdown to
//! `target/compare/results.md` and as an SVG bar chart to
//! `target/compare/results.svg`.
//!
//! Each cell is measured twice, interleaved (every cell of a table, then
//! every cell again), and the better of the two counts; except in the
//! Pipe's table ([`pipe_table`]), where the Pipe, the socketpair floors
//! and Python's Pipe are alternated in rounds (7 per cell, 15 where the
//! kernel places the partners) and each rate is the median of its rounds.
//!
//! Run: `cargo run --release --example compare` (about two and a half
//! minutes on two CPUs). `--smoke` runs two tiny cases with three peers, writes to
//! `target/compare/smoke/`, and skips Python. `--typed` runs only the table
//! of typed messages against the bytes path and prints it; `--pipe` only
//! the Pipe's table.
#![allow(unsafe_code)]

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "compare/pipe_table.rs"]
mod pipe_table;
#[path = "compare/rounds.rs"]
mod rounds;
#[path = "compare/typed_table.rs"]
mod typed_table;

use common::{
    Case, Flow, Peer, Placement, RoundTrip, first_batch, first_count, measure, memcpy_run, peers,
    remove_stale_iceoryx2_nodes,
};
use plotters::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Value columns: (key, heading).
const COLUMNS: [(&str, &str); 18] = [
    ("queue", "multiproc Queue"),
    ("queue_typed", "Queue typed"),
    ("queue_zero_copy", "Queue zero-copy"),
    ("pipe", "multiproc Pipe"),
    ("raw_pipe", "raw pipe"),
    ("socketpair", "socketpair"),
    ("spsc_ring", "SPSC ring"),
    ("futex", "spin-then-futex"),
    ("memcpy", "memcpy"),
    ("memcpy_two", "memcpy, two destinations"),
    ("ipc_channel", "ipc-channel"),
    ("iceoryx2", "iceoryx2"),
    ("iceoryx2_blocking", "iceoryx2 blocking"),
    ("iceoryx2_zero_copy", "iceoryx2 zero-copy"),
    ("shm_raw_sync", "shared_memory+raw_sync"),
    ("python_queue", "Python Queue"),
    ("python_pipe", "Python Pipe"),
    ("faster_fifo", "faster-fifo"),
];

/// Ratio columns: ours ÷ theirs, as rates (so > 1 means multiproc is
/// faster, also for round trips).
const RATIOS: [(&str, &str, &str); 14] = [
    ("queue", "spsc_ring", "Queue ÷ SPSC ring"),
    ("queue", "futex", "Queue ÷ spin-then-futex"),
    ("queue", "memcpy", "Queue ÷ memcpy"),
    ("queue_zero_copy", "memcpy", "zero-copy ÷ memcpy"),
    (
        "queue_zero_copy",
        "memcpy_two",
        "zero-copy ÷ memcpy, two destinations",
    ),
    ("queue", "raw_pipe", "Queue ÷ raw pipe"),
    ("queue", "ipc_channel", "Queue ÷ ipc-channel"),
    ("queue", "iceoryx2", "Queue ÷ iceoryx2"),
    ("queue", "iceoryx2_blocking", "Queue ÷ iceoryx2 blocking"),
    (
        "queue_zero_copy",
        "iceoryx2_zero_copy",
        "zero-copy ÷ iceoryx2 zero-copy",
    ),
    ("queue", "shm_raw_sync", "Queue ÷ shm+raw_sync"),
    ("queue", "python_queue", "Queue ÷ Python Queue"),
    ("queue", "faster_fifo", "Queue ÷ faster-fifo"),
    ("pipe", "ipc_channel", "Pipe ÷ ipc-channel"),
];

/// Operations per second (messages, or round trips) per (case, peer key).
type Results = BTreeMap<(Case, String), f64>;

struct Settings {
    smoke: bool,
    batch: Duration,
    rounds: usize,
}

/// The argument that makes this program only free what the iceoryx2
/// partners it killed left behind (see [`tidy_up_iceoryx2`]).
const ICEORYX2_CLEANUP: &str = "--remove-stale-iceoryx2-nodes";

fn main() {
    if std::env::args().any(|a| a == ICEORYX2_CLEANUP) {
        remove_stale_iceoryx2_nodes();
        return;
    }
    let smoke = std::env::args().any(|a| a == "--smoke");
    let settings = Settings {
        smoke,
        batch: if smoke {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(80)
        },
        rounds: if smoke { 1 } else { 3 },
    };
    if std::env::args().any(|a| a == "--typed") {
        // Only the typed table, printed (for working on the codec).
        println!(
            "{}",
            typed_table::typed_table(&typed_table::run_typed(smoke, settings.batch / 4))
        );
        return;
    }
    if std::env::args().any(|a| a == "--pipe") {
        // Only the Pipe's table, printed (for working on the Pipe).
        let python = (!smoke).then(|| python_interpreter().0);
        let rounds = pipe_table::run_pipe_table(smoke, settings.batch / 2, python.as_deref());
        println!("{}", pipe_table::pipe_table(&rounds));
        return;
    }
    let started = Instant::now();
    let mut results = Results::new();
    let mut left_out = BTreeSet::new();
    let mut regime = Regime::default();
    run_rust(&settings, &mut results, &mut left_out, &mut regime);
    let interpreter = (!smoke).then(python_interpreter);
    let python = match &interpreter {
        None => "skipped (--smoke)".to_string(),
        Some((interpreter, fifo_note)) => run_python(interpreter, fifo_note, &mut results),
    };
    let cases: Vec<Case> = if smoke {
        vec![Case::Flow { size: 8, procs: 1 }, Case::RoundTrip]
    } else {
        Case::all()
    };

    let pipe_rounds = pipe_table::run_pipe_table(
        smoke,
        settings.batch / 2,
        interpreter.as_ref().map(|(python, _)| python.as_path()),
    );
    let pipe_table = pipe_table::pipe_table(&pipe_rounds);
    let placed = run_placed(&settings);
    let placed_table = placed_table(&placed);
    let typed_table = typed_table::typed_table(&typed_table::run_typed(smoke, settings.batch / 4));

    let machine = machine();
    let table = markdown_table(&cases, &results);
    println!("{table}");
    println!("{pipe_table}");
    println!("{placed_table}");
    println!("{typed_table}");
    println!("Python: {python}");
    let regime = regime.summary();
    println!("Regime: {regime}");

    let dir = target_dir().join("compare");
    let dir = if smoke { dir.join("smoke") } else { dir };
    std::fs::create_dir_all(&dir).expect("create target/compare");
    let md_path = dir.join("results.md");
    let svg_path = dir.join("results.svg");
    let mut md = String::new();
    let _ = writeln!(md, "Command: `cargo run --release --example compare`  ");
    let _ = writeln!(md, "{machine}  ");
    let _ = writeln!(md, "Regime: {regime}  ");
    let _ = writeln!(
        md,
        "Python: {python}. Whole run: {:.0} s.\n",
        started.elapsed().as_secs_f64()
    );
    md.push_str(&table);
    let _ = write!(
        md,
        "\nThe Pipe against the socketpair floors and Python's Pipe, by placement (the \
         partners pinned to one CPU, to two, or left to the kernel; the same run, each \
         cell {} rounds ({} left to the kernel), every contender started afresh in each \
         round in a balanced order, each rate the median of its rounds):\n\n",
        pipe_table::PIPE_ROUNDS,
        pipe_table::PIPE_ROUNDS_KERNEL,
    );
    md.push_str(&pipe_table);
    md.push_str(
        "\nBy placement (the partners pinned to one CPU, to two, or left to the kernel; the same run, \
         the whole table measured twice, the best of the two):\n\n",
    );
    md.push_str(&placed_table);
    let _ = write!(
        md,
        "\nTyped messages against the bytes path (1→1, the sender and the receiver pinned to \
         two CPUs; the same run, each row in {} rounds, every contender started afresh in each \
         round in a balanced order, each rate the median of its rounds):\n\n",
        typed_table::TYPED_ROUNDS,
    );
    md.push_str(&typed_table);
    md.push_str("\nLeft out:\n\n");
    for (peer, why) in &left_out {
        let _ = writeln!(md, "- {peer}: {why}");
    }
    std::fs::write(&md_path, md).expect("write results.md");
    chart(&cases, &results, &svg_path).expect("write results.svg");
    tidy_up_iceoryx2();
    println!("Markdown: {}", md_path.display());
    println!("SVG chart: {}", svg_path.display());
}

/// Frees the iceoryx2 resources of the killed partners, from a fresh copy
/// of this program (see [`remove_stale_iceoryx2_nodes`]).
fn tidy_up_iceoryx2() {
    let freed =
        std::env::current_exe().and_then(|exe| Command::new(exe).arg(ICEORYX2_CLEANUP).status());
    if !matches!(freed, Ok(status) if status.success()) {
        eprintln!("[iceoryx2] stale nodes not removed: {freed:?}");
    }
}

/// What a cell of the main table measures.
#[derive(Clone, Copy)]
enum Contender<'a> {
    Peer(&'a dyn Peer),
    /// Single-thread `memcpy` into this many destinations in turn.
    Memcpy {
        destinations: usize,
    },
}

/// Every Rust cell: the peers from `benches/common`, and memcpy.
fn run_rust(
    settings: &Settings,
    results: &mut Results,
    left_out: &mut BTreeSet<(String, String)>,
    regime: &mut Regime,
) {
    let all = peers();
    let socketpair = all
        .iter()
        .find(|p| p.key() == "socketpair")
        .expect("the socketpair floor is a peer");
    let chosen: Vec<&dyn Peer> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| !settings.smoke || ["queue", "pipe", "raw_pipe"].contains(&p.key()))
        .collect();
    let cases = if settings.smoke {
        vec![Case::Flow { size: 8, procs: 1 }, Case::RoundTrip]
    } else {
        Case::all()
    };
    let mut cells = Vec::new();
    for &case in &cases {
        for &peer in &chosen {
            match peer.skip(case) {
                None => cells.push((case, Contender::Peer(peer))),
                Some(why) => {
                    left_out.insert((peer.label().to_string(), why.to_string()));
                }
            }
        }
        if !settings.smoke && matches!(case, Case::Flow { size, procs: 1 } if size >= 64 * 1024) {
            cells.push((case, Contender::Memcpy { destinations: 1 }));
            cells.push((case, Contender::Memcpy { destinations: 2 }));
        }
    }
    // Every cell, then every cell again, the better of the two counting
    // (as in the other tables): a stall of the machine that catches one
    // measurement does not decide a ratio.
    let tries = if settings.smoke { 1 } else { MAIN_TRIES };
    let total = cells.len() * tries;
    let passes = (0..tries).flat_map(|_| cells.iter().copied());
    for (i, (case, peer)) in passes.enumerate() {
        let (canary_us, load) = regime.look(socketpair.as_ref());
        let t = Instant::now();
        let (key, label, rate) = match (case, peer) {
            (Case::Flow { size, procs }, Contender::Peer(peer)) => {
                let mut flow = Flow::start(peer, size, procs);
                let rate = measure(
                    |n| flow.run_counted(n),
                    first_batch(size),
                    settings.batch,
                    settings.rounds,
                );
                (peer.key(), peer.label(), rate)
            }
            (Case::Flow { size, .. }, Contender::Memcpy { destinations }) => {
                let src = vec![3u8; size];
                let mut dst = vec![0u8; destinations * size];
                let rate = measure(
                    |n| (memcpy_run(&src, &mut dst, n), n),
                    first_batch(size),
                    settings.batch,
                    settings.rounds,
                );
                match destinations {
                    1 => ("memcpy", "memcpy", rate),
                    _ => ("memcpy_two", "memcpy, two destinations", rate),
                }
            }
            (Case::RoundTrip, Contender::Peer(peer)) => {
                let mut rtt = RoundTrip::start(peer);
                let rate = measure(
                    |n| (rtt.run(n), n),
                    first_count(case),
                    settings.batch,
                    settings.rounds,
                );
                (peer.key(), peer.label(), rate)
            }
            (Case::RoundTrip, Contender::Memcpy { .. }) => {
                unreachable!("memcpy has no round trip")
            }
        };
        eprintln!(
            "[{:>2}/{total}] {:<16} {:<24} {:>12}   ({:.1} s; canary {canary_us:.1} µs, load {load:.2})",
            i + 1,
            case.label(),
            label,
            cell(case, Some(rate)),
            t.elapsed().as_secs_f64()
        );
        let best = results.entry((case, key.to_string())).or_insert(0.0);
        *best = best.max(rate);
    }
}

/// How many times each cell of the main table is measured (the best
/// counts).
const MAIN_TRIES: usize = 2;

/// Peers measured in every placement, in column order: (key, heading).
/// The zero-copy pair only where it has cells (64 KiB and 1 MiB).
const PLACED_PEERS: [(&str, &str); 4] = [
    ("queue", "multiproc Queue"),
    ("socketpair", "socketpair"),
    ("queue_zero_copy", "Queue zero-copy"),
    ("iceoryx2_zero_copy", "iceoryx2 zero-copy"),
];

/// Ratio columns of the placement table: (ours, theirs, heading).
const PLACED_RATIOS: [(&str, &str, &str); 2] = [
    ("queue", "socketpair", "Queue ÷ socketpair"),
    (
        "queue_zero_copy",
        "iceoryx2_zero_copy",
        "zero-copy ÷ iceoryx2 zero-copy",
    ),
];

/// Rates per (case, placement index in [`Placement::ALL`], peer key).
type Placed = BTreeMap<(Case, usize, &'static str), f64>;

/// The round trip and the 1→1 flows at 8 B, 64 KiB and 1 MiB for the
/// Queue and the socketpair floor (and at 64 KiB and 1 MiB for the
/// zero-copy Queue and iceoryx2), in every placement the machine allows
/// (`--smoke`: the round trip of the Queue and the socketpair). The Pipe
/// has a table of its own ([`pipe_table`]).
fn run_placed(settings: &Settings) -> Placed {
    let all = peers();
    let cases: Vec<Case> = if settings.smoke {
        vec![Case::RoundTrip]
    } else {
        [8, 64 * 1024, 1 << 20]
            .map(|size| Case::Flow { size, procs: 1 })
            .into_iter()
            .chain([Case::RoundTrip])
            .collect()
    };
    let mut placed = Placed::new();
    // The whole table, then the whole table again, the best of the two
    // counting: the two measurements of a cell lie a table apart, so a slow
    // spell of the machine (seconds long) rarely catches both.
    for _ in 0..if settings.smoke { 1 } else { PLACED_TRIES } {
        for &case in &cases {
            for (pi, placement) in Placement::ALL.into_iter().enumerate() {
                if !placement.possible() {
                    continue;
                }
                for (key, _) in PLACED_PEERS {
                    let peer = all.iter().find(|p| p.key() == key).expect("a peer");
                    if peer.skip(case).is_some()
                        || (settings.smoke && key != "queue" && key != "socketpair")
                    {
                        continue;
                    }
                    let rate = match case {
                        Case::Flow { size, procs } => {
                            let mut flow =
                                Flow::start_placed(peer.as_ref(), size, procs, placement);
                            measure(
                                |n| flow.run_counted(n),
                                first_batch(size),
                                settings.batch,
                                settings.rounds,
                            )
                        }
                        Case::RoundTrip => {
                            let mut rtt = RoundTrip::start_placed(peer.as_ref(), placement);
                            measure(
                                |n| (rtt.run(n), n),
                                first_count(case),
                                settings.batch,
                                settings.rounds,
                            )
                        }
                    };
                    eprintln!(
                        "[placed] {:<16} {:<20} {:<16} {:>12}",
                        case.label(),
                        placement.label(),
                        key,
                        cell(case, Some(rate))
                    );
                    let best = placed.entry((case, pi, key)).or_insert(rate);
                    *best = best.max(rate);
                }
            }
        }
    }
    placed
}

/// How many times each cell of the placement table is measured (the best
/// counts).
const PLACED_TRIES: usize = 2;

/// The placed cells as Markdown: one row per case and placement, with
/// the Queue's ratio to the socketpair floor and the zero-copy Queue's to
/// iceoryx2's.
fn placed_table(placed: &Placed) -> String {
    let rows = placed.keys().map(|&(c, p, _)| (c, p)).collect();
    by_placement_markdown(rows, &PLACED_PEERS, &PLACED_RATIOS, |case, pi, key| {
        placed.get(&(case, pi, key)).copied()
    })
}

/// A table with one row per (case, placement index in [`Placement::ALL`])
/// of `rows`: a cell per column `(key, heading)` of `columns`, from
/// `rate(case, placement, key)`, then a ratio per `(ours, theirs,
/// heading)` of `ratios`.
fn by_placement_markdown(
    rows: BTreeSet<(Case, usize)>,
    columns: &[(&str, &str)],
    ratios: &[(&str, &str, &str)],
    rate: impl Fn(Case, usize, &str) -> Option<f64>,
) -> String {
    let mut out = String::from("| case | placement |");
    for (_, head) in columns {
        let _ = write!(out, " {head} |");
    }
    for (_, _, head) in ratios {
        let _ = write!(out, " {head} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(columns.len() + ratios.len()));
    out.push('\n');
    for (case, pi) in rows {
        let get = |key: &str| rate(case, pi, key);
        let _ = write!(out, "| {} | {} |", case.label(), Placement::ALL[pi].label());
        for (key, _) in columns {
            let _ = write!(out, " {} |", cell(case, get(key)));
        }
        for (ours, theirs, _) in ratios {
            match (get(ours), get(theirs)) {
                (Some(ours), Some(theirs)) => {
                    let _ = write!(out, " {:.2}× |", ours / theirs);
                }
                _ => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The machine's regime through the run: before each cell, the load
/// average and a socketpair round trip between this process and a forked
/// echo (a canary: tens of µs when the two run on different, idle CPUs
/// and each wake-up crosses CPUs; a few µs when they share a busy one).
#[derive(Default)]
struct Regime {
    canary_us: Vec<f64>,
    load: Vec<f64>,
}

impl Regime {
    /// Looks once: (canary round trip in µs, one-minute load).
    fn look(&mut self, socketpair: &dyn Peer) -> (f64, f64) {
        const TRIPS: u64 = 100;
        let mut rtt = RoundTrip::start(socketpair);
        let us = rtt.run(TRIPS).as_secs_f64() * 1e6 / TRIPS as f64;
        let load = multiproc_testkit::load_average()
            .split_whitespace()
            .next()
            .and_then(|one| one.parse().ok())
            .unwrap_or(f64::NAN);
        self.canary_us.push(us);
        self.load.push(load);
        (us, load)
    }

    /// One line for the record.
    fn summary(&self) -> String {
        if self.canary_us.is_empty() {
            return "not looked at".to_string();
        }
        let range = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let (lo, median, hi) = range(&self.canary_us);
        let (load_lo, _, load_hi) = range(&self.load);
        format!(
            "load {load_lo:.2}–{load_hi:.2}; socketpair round-trip canary before each cell \
             {lo:.1}–{hi:.1} µs, median {median:.1} µs (tens of µs: the pair ran on two CPUs \
             and each wake-up crossed them; a few µs: it shared one)"
        )
    }
}

/// The Python to run: one with faster-fifo (from a virtual environment
/// under `target/compare/` made on first use, when the system's Python has
/// none), or `python3`; with a note on faster-fifo for the table.
fn python_interpreter() -> (PathBuf, String) {
    let venv = target_dir().join("compare").join("venv");
    match multiproc_testkit::python_with(&venv, &[("faster-fifo", "faster_fifo")]) {
        Ok(python) => (python, "faster-fifo from pip".to_string()),
        Err(why) => (
            PathBuf::from("python3"),
            format!("faster-fifo not run: {why}"),
        ),
    }
}

/// `benches/python_mp.py`: Python's Queue and Pipe, measured.
fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_mp.py")
}

/// Runs `benches/python_mp.py --quick` with `python`; returns a note for
/// the table.
fn run_python(python: &Path, fifo_note: &str, results: &mut Results) -> String {
    let script = python_script();
    eprintln!("[python] {} {} --quick", python.display(), script.display());
    let out = match Command::new(python).arg(&script).arg("--quick").output() {
        Ok(out) => out,
        Err(err) => {
            let note = format!("not run: python3 not found ({err})");
            eprintln!("[python] {note}");
            return note;
        }
    };
    if !out.status.success() {
        let note = format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        eprintln!("[python] {note}");
        return note;
    }
    let version = Command::new(python)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cases = Case::all();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(peer), Some(key), Some(rate)) = (
            v["peer"].as_str(),
            v["case"].as_str(),
            v["msg_per_s"].as_f64(),
        ) else {
            continue;
        };
        if let Some(&case) = cases.iter().find(|c| c.key() == key) {
            eprintln!(
                "[python] {:<16} {:<24} {:>12}",
                case.label(),
                peer,
                cell(case, Some(rate))
            );
            results.insert((case, peer.to_string()), rate);
        }
    }
    format!(
        "{version}, multiprocessing, start method fork, `benches/python_mp.py --quick`; {fifo_note}"
    )
}

/// A rate as people read it: messages/s for small payloads, bytes/s for
/// large ones, microseconds for round trips.
fn cell(case: Case, rate: Option<f64>) -> String {
    let Some(rate) = rate else {
        return "—".to_string();
    };
    match case {
        Case::RoundTrip => format!("{:.2} µs", 1e6 / rate),
        Case::Flow { size, .. } if size >= 64 * 1024 => {
            format!("{:.2} GB/s", rate * size as f64 / 1e9)
        }
        Case::Flow { .. } if rate >= 1e6 => format!("{:.2} M/s", rate / 1e6),
        Case::Flow { .. } => format!("{:.0} K/s", rate / 1e3),
    }
}

fn markdown_table(cases: &[Case], results: &Results) -> String {
    let get = |case: Case, key: &str| results.get(&(case, key.to_string())).copied();
    let mut heads = vec!["case".to_string()];
    heads.extend(COLUMNS.iter().map(|(_, h)| h.to_string()));
    heads.extend(RATIOS.iter().map(|(_, _, h)| h.to_string()));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Messages/s (M/s, K/s) for payloads up to 1 KiB, GB/s for 64 KiB and 1 MiB, \
         µs per round trip. Ratios are rates, ours ÷ theirs (> 1: multiproc is faster), \
         from this run; each Rust cell measured twice, interleaved, the best of the two. \
         — = not measured (see below).\n"
    );
    let _ = writeln!(out, "| {} |", heads.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(heads.len()));
    for &case in cases {
        let mut row = vec![case.label()];
        row.extend(COLUMNS.iter().map(|(k, _)| cell(case, get(case, k))));
        row.extend(
            RATIOS
                .iter()
                .map(|(a, b, _)| match (get(case, a), get(case, b)) {
                    (Some(a), Some(b)) => format!("{:.2}×", a / b),
                    _ => "—".to_string(),
                }),
        );
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Grouped bars: throughput in MB/s (log scale) per case, and round-trip
/// latency in µs (log scale).
fn chart(cases: &[Case], results: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let flows: Vec<Case> = cases
        .iter()
        .copied()
        .filter(|c| matches!(c, Case::Flow { .. }))
        .collect();
    let series: Vec<(usize, &str, &str)> = COLUMNS
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| results.keys().any(|(_, key)| key == k))
        .map(|(i, (k, h))| (i, *k, *h))
        .collect();
    let root = SVGBackend::new(path, (1600, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(1250);
    let width = 0.84 / series.len().max(1) as f64;

    // Throughput panel.
    let mb = |case: Case, rate: f64| match case {
        Case::Flow { size, .. } => rate * size as f64 / 1e6,
        Case::RoundTrip => 0.0,
    };
    let values: Vec<f64> = results
        .iter()
        .filter(|((c, _), _)| flows.contains(c))
        .map(|((c, _), r)| mb(*c, *r))
        .collect();
    let (lo, hi) = bounds(&values);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "Throughput, MB/s (log scale; higher is better)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..flows.len() as f64 - 0.5, (lo..hi).log_scale())?;
    let labels: Vec<String> = flows.iter().map(|c| c.label()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(flows.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("MB/s")
        .draw()?;
    for (slot, &(color, key, head)) in series.iter().enumerate() {
        let style = Palette99::pick(color).filled();
        let bars: Vec<Rectangle<(f64, f64)>> = flows
            .iter()
            .enumerate()
            .filter_map(|(i, &case)| {
                let v = mb(case, *results.get(&(case, key.to_string()))?);
                let x0 = i as f64 - 0.42 + slot as f64 * width;
                Some(Rectangle::new([(x0, lo), (x0 + width * 0.9, v)], style))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)?
            .label(head)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Round-trip panel.
    let rtts: Vec<(usize, &str, f64)> = series
        .iter()
        .filter_map(|&(color, key, head)| {
            let rate = results.get(&(Case::RoundTrip, key.to_string()))?;
            Some((color, head, 1e6 / rate))
        })
        .collect();
    if !rtts.is_empty() {
        let (lo, hi) = bounds(&rtts.iter().map(|r| r.2).collect::<Vec<_>>());
        let mut chart = ChartBuilder::on(&right)
            .caption("Round trip 8 B, µs (lower is better)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..rtts.len() as f64 - 0.5, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("µs")
            .draw()?;
        chart.draw_series(rtts.iter().enumerate().map(|(i, &(color, _, us))| {
            Rectangle::new(
                [(i as f64 - 0.4, lo), (i as f64 + 0.4, us)],
                Palette99::pick(color).filled(),
            )
        }))?;
        chart.draw_series(rtts.iter().enumerate().map(|(i, &(_, head, us))| {
            Text::new(
                format!("{head} {us:.1}"),
                (i as f64 - 0.35, us * 1.15),
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate270),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// Log-axis bounds around positive `values`, a little padded.
fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    if lo.is_finite() && hi > 0.0 {
        (lo / 3.0, hi * 4.0)
    } else {
        (0.1, 10.0)
    }
}

/// The target directory this example was built into
/// (`<target>/<profile>/examples/compare`), or `./target`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Date, CPUs, CPU model, rustc and commit, for the record.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let tool = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".to_string())
    };
    format!(
        "Date: {} · machine: {cpus} CPUs, {model} · {} · commit {}",
        utc_now(),
        tool("rustc", &["--version"]),
        tool("git", &["rev-parse", "--short", "HEAD"]),
    )
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
