//! The `random` interface: a deterministic stream from the seed of the call's plugin, region
//! and day, recorded draw by draw so anyone can check it once the seed is revealed.
//!
//! Block `n` of invocation `id` is HMAC-SHA256(seed, id ‖ n as 8 big-endian bytes); a draw of
//! 64 bits is the first 8 bytes of one block, big-endian. Integers below a bound are sampled
//! by rejection, never by a bare modulo, so no outcome is favoured. The README's section
//! "Invocation records and fair draws" describes the scheme for verifiers.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::runtime::interfaces::random::Host;
use crate::runtime::{LimitExceeded, Metered};

/// One draw a call made, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Draw {
    /// Its place among the call's draws, from 0.
    pub seq: u64,
    /// The block counter it started at.
    pub counter: u64,
    /// The bound it was drawn below; `None` for 64 raw bits.
    pub upper: Option<u64>,
    /// What it returned.
    pub value: u64,
}

/// A call's stream of draws.
pub struct Draws {
    seed: [u8; 32],
    invocation_id: String,
    counter: u64,
    recorded: Vec<Draw>,
}

impl Draws {
    /// The stream of invocation `invocation_id` from `seed`.
    pub fn new(seed: [u8; 32], invocation_id: String) -> Self {
        Self {
            seed,
            invocation_id,
            counter: 0,
            recorded: Vec::new(),
        }
    }

    /// The draws made so far, in order; the record is left empty.
    pub fn take_recorded(&mut self) -> Vec<Draw> {
        std::mem::take(&mut self.recorded)
    }

    fn block(&mut self) -> u64 {
        let value = block(&self.seed, &self.invocation_id, self.counter);
        self.counter += 1;
        value
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let counter = self.counter;
        let value = self.block();
        self.record(counter, None, value)
    }

    /// A uniform integer in `[0, upper)`; `upper` must be at least 1.
    pub fn below(&mut self, upper: u64) -> Option<u64> {
        if upper == 0 {
            return None;
        }
        let counter = self.counter;
        let value = sample_below(upper, || self.block());
        Some(self.record(counter, Some(upper), value))
    }

    fn record(&mut self, counter: u64, upper: Option<u64>, value: u64) -> u64 {
        self.recorded.push(Draw {
            seq: self.recorded.len() as u64,
            counter,
            upper,
            value,
        });
        value
    }
}

/// Block `counter` of invocation `invocation_id` under `seed`.
pub fn block(seed: &[u8], invocation_id: &str, counter: u64) -> u64 {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(invocation_id.as_bytes());
    mac.update(&counter.to_be_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first)
}

/// A uniform integer below `upper` (at least 1) from the blocks `next` gives: blocks below
/// `2^64 mod upper` would make some results more likely, so they are skipped.
fn sample_below(upper: u64, mut next: impl FnMut() -> u64) -> u64 {
    let threshold = upper.wrapping_neg() % upper;
    loop {
        let x = next();
        if x >= threshold {
            return x % upper;
        }
    }
}

/// Recomputes a call's recorded draws from the revealed `seed`: each draw must start at the
/// counter where the one before ended (none skipped) and return what was recorded. Returns,
/// for each draw, what it should have returned.
pub fn replay(seed: &[u8], invocation_id: &str, draws: &[Draw]) -> Vec<Replayed> {
    let mut counter = 0u64;
    draws
        .iter()
        .enumerate()
        .map(|(index, draw)| {
            let starts_at = counter;
            let mut next = || {
                let value = block(seed, invocation_id, counter);
                counter += 1;
                value
            };
            let expected = match draw.upper {
                None => next(),
                Some(0) => u64::MAX,
                Some(upper) => sample_below(upper, next),
            };
            Replayed {
                seq: draw.seq,
                expected_counter: starts_at,
                expected_value: expected,
                matches: draw.seq == index as u64
                    && draw.counter == starts_at
                    && draw.value == expected
                    && draw.upper != Some(0),
            }
        })
        .collect()
}

/// One recorded draw recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Which draw.
    pub seq: u64,
    /// The counter it should have started at.
    pub expected_counter: u64,
    /// What it should have returned.
    pub expected_value: u64,
    /// Whether the record says exactly that.
    pub matches: bool,
}

impl Host for Metered<'_, Draws> {
    fn next_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.charge()?.next_u64())
    }

    fn below(&mut self, upper: u64) -> wasmtime::Result<u64> {
        self.charge()?
            .below(upper)
            .ok_or_else(|| LimitExceeded::RandomBelowZero.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_invocation_replay_the_same_draws() {
        let mut a = Draws::new([7; 32], "call-1".into());
        let mut b = Draws::new([7; 32], "call-1".into());
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert_ne!(first[0], first[1]);
        assert_ne!(Draws::new([8; 32], "call-1".into()).next_u64(), first[0]);
        assert_ne!(Draws::new([7; 32], "call-2".into()).next_u64(), first[0]);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut draws = Draws::new([1; 32], "call".into());
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            let x = draws.below(6).expect("6 > 0");
            seen[x as usize] += 1;
        }
        // Each face near 1000; a biased or broken sampler lands far off.
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
        assert_eq!(draws.below(1), Some(0));
        assert_eq!(draws.below(0), None);
    }

    #[test]
    fn rejection_skips_the_blocks_that_would_bias_the_result() {
        // With upper = 2^63 + 1 almost half of all blocks fall below the threshold.
        let upper = (1u64 << 63) + 1;
        let mut draws = Draws::new([3; 32], "call".into());
        for _ in 0..64 {
            draws.below(upper);
        }
        let recorded = draws.take_recorded();
        let skipped = recorded.windows(2).any(|w| w[1].counter > w[0].counter + 1);
        assert!(skipped, "some block should have been rejected");
        assert!(
            replay(&[3; 32], "call", &recorded)
                .iter()
                .all(|r| r.matches)
        );
    }

    #[test]
    fn replay_accepts_the_record_and_catches_any_change() {
        let mut draws = Draws::new([5; 32], "call".into());
        draws.below(10);
        draws.next_u64();
        draws.below(1000);
        let honest = draws.take_recorded();
        assert!(replay(&[5; 32], "call", &honest).iter().all(|r| r.matches));

        let mut changed_value = honest.clone();
        changed_value[2].value = (changed_value[2].value + 1) % 1000;
        assert!(!replay(&[5; 32], "call", &changed_value)[2].matches);

        // Dropping an unfavourable draw shows: the next one starts at the wrong counter.
        let skipped: Vec<Draw> = honest[1..].to_vec();
        assert!(!replay(&[5; 32], "call", &skipped)[0].matches);

        assert!(!replay(&[6; 32], "call", &honest).iter().all(|r| r.matches));
        assert!(!replay(&[5; 32], "other", &honest).iter().all(|r| r.matches));
    }
}
