//! The typed table: `Queue<T>::put`/`get` and `Connection::send`/`recv`
//! against the bytes paths (`put_bytes`/`get_bytes`,
//! `send_bytes`/`recv_bytes`) of the same size, for the payloads users
//! send, the four contenders of a row alternated.
//!
//! Pinned to two CPUs, the same flow of 8-byte messages moves anywhere from
//! 9 to 21 M/s, and drifts between the two within one flow over seconds
//! (the guest's CPUs move on the host); two cells measured a few seconds
//! apart compare two such phases, not two paths. So the table is measured
//! in rounds ([`TYPED_ROUNDS`]), each round going through every row and
//! starting each contender of a row afresh in a balanced order
//! ([`multiproc_testkit::balanced_order`]), and a rate is the median of its
//! rounds, as in the Pipe's table.

use super::common::{Case, Flow, Peer, Placement, TypedRow, median, peers, typed_rows};
use super::rounds::{one_round, ratio_range};
use multiproc_testkit::balanced_order;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

/// Rounds per row; a rate is the median of its rounds.
pub const TYPED_ROUNDS: usize = 15;

/// One row of the typed table: the median rates of the queue's bytes and
/// typed paths, then the pipe's.
pub struct TypedRates {
    label: &'static str,
    size: usize,
    rates: [f64; 4],
}

/// For each payload kind and size, the bytes and typed paths of the Queue
/// and of the Pipe, alternated in [`TYPED_ROUNDS`] rounds of the whole
/// table (`smoke`: the `u64` row and one 1 KiB row, one round). `batch`: how long one
/// timed run of a contender lasts.
pub fn run_typed(smoke: bool, batch: Duration) -> Vec<TypedRates> {
    let all = peers();
    let bytes_peer = |key: &str| all.iter().find(|p| p.key() == key).expect("a peer");
    let (queue_bytes, pipe_bytes) = (bytes_peer("queue"), bytes_peer("pipe"));
    let rows: Vec<TypedRow> = typed_rows()
        .into_iter()
        .filter(|row| !smoke || row.size <= 1024)
        .take(if smoke { 2 } else { usize::MAX })
        .collect();
    let rounds = if smoke { 1 } else { TYPED_ROUNDS };
    // Batch sizes for `one_round`, per row (the keys repeat across rows).
    let mut sizes = vec![BTreeMap::new(); rows.len()];
    let mut by_round = vec![[const { Vec::new() }; 4]; rows.len()];
    // Round after round of the whole table, so the rounds of a row lie
    // seconds apart: a phase of the host lands on a few rounds of every
    // row, not on all rounds of one.
    for round in 0..rounds {
        for (r, row) in rows.iter().enumerate() {
            let contenders: [(&'static str, &dyn Peer); 4] = [
                ("queue bytes", queue_bytes.as_ref()),
                ("queue typed", row.queue.as_ref()),
                ("pipe bytes", pipe_bytes.as_ref()),
                ("pipe typed", row.pipe.as_ref()),
            ];
            let case = Case::Flow {
                size: row.size,
                procs: 1,
            };
            for i in 0..contenders.len() {
                let c = balanced_order(round, i, contenders.len());
                let (key, peer) = contenders[c];
                let mut flow = Flow::start_placed(peer, row.size, 1, typed_placement());
                let Ok(rate) = one_round(&mut sizes[r], key, case, batch, |n| {
                    Ok::<_, Infallible>(flow.run(n))
                });
                by_round[r][c].push(rate);
            }
        }
        eprintln!("[typed] round {}/{rounds}", round + 1);
    }
    let mut out = Vec::new();
    for (row, by_round) in rows.iter().zip(&by_round) {
        let case = Case::Flow {
            size: row.size,
            procs: 1,
        };
        let rates = by_round.each_ref().map(|r| median(r));
        eprintln!(
            "[typed] {:<20} {:<8} queue {:>11} / {:>11}  pipe {:>11} / {:>11}  \
             typed ÷ bytes by round: queue {}, pipe {}",
            row.label,
            super::common::size_label(row.size),
            super::cell(case, Some(rates[1])),
            super::cell(case, Some(rates[0])),
            super::cell(case, Some(rates[3])),
            super::cell(case, Some(rates[2])),
            ratio_range(&by_round[1], &by_round[0]),
            ratio_range(&by_round[3], &by_round[2]),
        );
        out.push(TypedRates {
            label: row.label,
            size: row.size,
            rates,
        });
    }
    out
}

/// Where the typed table's partners run: on two CPUs, one each, when the
/// machine has them. Left to the kernel, a pair sometimes shares a CPU and
/// sometimes not, a fivefold difference at 64 KiB.
fn typed_placement() -> Placement {
    if Placement::TwoCpus.possible() {
        Placement::TwoCpus
    } else {
        Placement::Kernel
    }
}

/// The typed rows as Markdown, with typed ÷ bytes (ratios of the medians)
/// for the Queue and the Pipe.
pub fn typed_table(rows: &[TypedRates]) -> String {
    let mut out = String::from(
        "| payload | size | Queue bytes | Queue typed | Queue typed ÷ bytes \
         | Pipe bytes | Pipe typed | Pipe typed ÷ bytes |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let case = Case::Flow {
            size: row.size,
            procs: 1,
        };
        let [qb, qt, pb, pt] = row.rates;
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            row.label,
            super::common::size_label(row.size),
            super::cell(case, Some(qb)),
            super::cell(case, Some(qt)),
            qt / qb,
            super::cell(case, Some(pb)),
            super::cell(case, Some(pt)),
            pt / pb,
        );
    }
    out
}
