//! In which order benchmarks run their contenders, round after round.

/// The contender that runs at `position` in `round`, for `n` contenders:
/// the rows of a Williams square (a balanced Latin square). Over a full
/// cycle of rounds (`n` when `n` is even, `2n` when odd) every contender
/// runs once per round, once in every position per `n` rounds, and right
/// after every other one equally often.
///
/// A plain rotation (`(position + round) % n`) keeps each contender's
/// predecessor fixed, so whatever one run leaves behind (a cold cache,
/// pages to reclaim, a CPU in a deep idle state) always lands on the same
/// next one; this order spreads it over all of them.
///
/// # Panics
///
/// When `position >= n`.
///
/// # Examples
///
/// ```
/// use multiproc_testkit::balanced_order;
///
/// let rows: Vec<Vec<usize>> = (0..4)
///     .map(|round| (0..4).map(|i| balanced_order(round, i, 4)).collect())
///     .collect();
/// assert_eq!(rows, [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]]);
/// ```
pub fn balanced_order(round: usize, position: usize, n: usize) -> usize {
    assert!(position < n, "position {position} of {n} contenders");
    // With an odd count, every other square runs its rows backwards: one
    // square alone would put some pairs next to each other twice and
    // others never.
    let position = if n % 2 == 1 && (round / n) % 2 == 1 {
        n - 1 - position
    } else {
        position
    };
    // The first row is 0, 1, n-1, 2, n-2, …; row r adds r to each.
    let first = if position % 2 == 1 {
        position.div_ceil(2)
    } else {
        (n - position / 2) % n
    };
    (first + round) % n
}

#[cfg(test)]
mod tests {
    use super::balanced_order;
    use std::collections::BTreeMap;

    /// Over `cycle` rounds of `order(round, position)`: whether every round
    /// runs everyone once, and every contender runs in every position, and
    /// right after every other one, `cycle / n` times.
    fn balanced(order: impl Fn(usize, usize) -> usize, n: usize, cycle: usize) -> bool {
        let (mut follows, mut positions) = (BTreeMap::new(), BTreeMap::new());
        for round in 0..cycle {
            let row: Vec<usize> = (0..n).map(|i| order(round, i)).collect();
            let mut sorted = row.clone();
            sorted.sort_unstable();
            if sorted != (0..n).collect::<Vec<_>>() {
                return false;
            }
            for (i, &c) in row.iter().enumerate() {
                *positions.entry((c, i)).or_insert(0) += 1;
            }
            for pair in row.windows(2) {
                *follows.entry((pair[0], pair[1])).or_insert(0) += 1;
            }
        }
        let times = cycle / n;
        follows.len() == n * (n - 1)
            && follows.values().all(|&k| k == times)
            && positions.values().all(|&k| k == times)
    }

    #[test]
    fn a_cycle_runs_everyone_once_a_round_in_every_position_and_after_everyone_equally() {
        for n in 1..=9 {
            let cycle = if n % 2 == 0 { n } else { 2 * n };
            assert!(
                balanced(|round, i| balanced_order(round, i, n), n, cycle),
                "{n} contenders"
            );
        }
    }

    #[test]
    fn a_rotation_is_not_balanced() {
        // What the order replaces, and a check that the check can fail.
        assert!(!balanced(|round, i| (i + round) % 4, 4, 4));
    }
}
