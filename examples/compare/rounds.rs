//! One timed round of a contender, the way the alternated tables measure
//! it: the first round of a contender finds its batch size, every round
//! warms up briefly and then times one batch.

use super::common::{Case, calibrate, first_count};
use std::collections::BTreeMap;
use std::time::Duration;

/// One round of contender `key`: the first time, finds how many messages
/// (or round trips) take about `batch` and keeps the count in `sizes`;
/// then a short warm-up and the timed run. Returns the rate.
pub fn one_round<E>(
    sizes: &mut BTreeMap<&'static str, u64>,
    key: &'static str,
    case: Case,
    batch: Duration,
    mut run: impl FnMut(u64) -> Result<Duration, E>,
) -> Result<f64, E> {
    let n = match sizes.get(key) {
        Some(&n) => n,
        None => {
            let n = calibrate(&mut run, first_count(case), batch)?;
            sizes.insert(key, n);
            n
        }
    };
    run((n / 8).max(1))?;
    Ok(n as f64 / run(n)?.as_secs_f64().max(1e-9))
}

/// `min–max` of the per-round ratios `ours[i] / theirs[i]` (the two runs
/// of a round lie at most a few runs apart).
pub fn ratio_range(ours: &[f64], theirs: &[f64]) -> String {
    let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(o, t)| o / t).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    format!("{lo:.2}–{hi:.2}")
}
