//! Randomness for draws that customers and regulators can check.
//!
//! The host keeps one secret seed per plugin, region and day, publishes its SHA-256 before
//! the day and the seed after it. A call's draws are a pure function of that seed, the call's
//! request id and the order of the draws, and every draw is recorded, so anyone can recompute
//! each draw (`lifecircle verify-draw`). Do not use it for secrets: the seed is published.
//!
//! Import: list `"random"` under `[capabilities] interfaces` in `plugin.toml`.
//!
//! ```no_run
//! use lifecircle_sdk::random;
//!
//! let die = random::below(6) + 1;
//! # let _ = die;
//! ```

use crate::__private::bindings::lifecircle::scenario::random as raw;

/// Returns 64 random bits.
///
/// ```no_run
/// use lifecircle_sdk::random;
///
/// let coin_is_heads = random::next_u64() & 1 == 1;
/// # let _ = coin_is_heads;
/// ```
pub fn next_u64() -> u64 {
    raw::next_u64()
}

/// Returns a uniformly distributed integer in `0..upper`, without modulo bias.
///
/// # Panics
///
/// If `upper` is 0 (an empty range has no member). The host would stop the call anyway; the
/// panic only makes the reason readable.
///
/// ```no_run
/// use lifecircle_sdk::random;
///
/// let prizes = ["pen", "mug", "umbrella"];
/// let prize = prizes[random::below(3) as usize];
/// # let _ = prize;
/// ```
pub fn below(upper: u64) -> u64 {
    assert!(
        upper > 0,
        "random::below needs an upper bound of at least 1"
    );
    raw::below(upper)
}

/// Picks an index into `weights`, each index with probability proportional to its weight.
///
/// Returns `None` when there is nothing to pick: `weights` is empty, every weight is 0, or
/// the weights sum past `u64::MAX`. Makes exactly one [`below`] call otherwise, so a replayed
/// call picks the same index.
///
/// ```no_run
/// use lifecircle_sdk::random;
///
/// // "nothing" 90%, "mug" 9%, "bike" 1%.
/// let prizes = ["nothing", "mug", "bike"];
/// let picked = random::pick_weighted(&[90, 9, 1]).map(|index| prizes[index]);
/// # let _ = picked;
/// ```
pub fn pick_weighted(weights: &[u64]) -> Option<usize> {
    let total = weights
        .iter()
        .try_fold(0_u64, |total, &weight| total.checked_add(weight))?;
    if total == 0 {
        return None;
    }
    index_for_draw(weights, below(total))
}

/// The index whose slice of `0..sum(weights)` contains `draw`.
fn index_for_draw(weights: &[u64], draw: u64) -> Option<usize> {
    let mut remaining = draw;
    for (index, &weight) in weights.iter().enumerate() {
        if remaining < weight {
            return Some(index);
        }
        remaining -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_for_draw_walks_the_cumulative_weights() {
        let weights = [2, 0, 3];
        let picked: Vec<_> = (0..5).map(|draw| index_for_draw(&weights, draw)).collect();
        assert_eq!(
            picked,
            [Some(0), Some(0), Some(2), Some(2), Some(2)],
            "a zero weight is never picked"
        );
    }

    #[test]
    fn index_for_draw_is_none_past_the_total() {
        assert_eq!(index_for_draw(&[1, 1], 2), None);
    }

    #[test]
    fn pick_weighted_has_nothing_to_pick_without_positive_weights() {
        assert_eq!(pick_weighted(&[]), None);
        assert_eq!(pick_weighted(&[0, 0]), None);
        assert_eq!(pick_weighted(&[u64::MAX, 1]), None);
    }
}
