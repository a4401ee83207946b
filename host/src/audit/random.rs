//! The `random` interface: a deterministic stream from the call's recorded seed.
//!
//! Draw `n` is HMAC-SHA256(seed, n as 8 big-endian bytes), so anyone with the seed can replay
//! every draw of a call. Integers below a bound are sampled by rejection, never by a bare
//! modulo, so no outcome is favoured.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::runtime::interfaces::random::Host;
use crate::runtime::{LimitExceeded, Metered};

/// A call's stream of draws.
pub struct Draws {
    seed: [u8; 32],
    counter: u64,
}

impl Draws {
    /// The stream for `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.seed).expect("HMAC takes any key length");
        mac.update(&self.counter.to_be_bytes());
        self.counter += 1;
        let bytes = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes[..8]);
        u64::from_be_bytes(first)
    }

    /// A uniform integer in `[0, upper)`; `upper` must be at least 1.
    pub fn below(&mut self, upper: u64) -> Option<u64> {
        if upper == 0 {
            return None;
        }
        // Values under `threshold` would make some results more likely; skip them.
        let threshold = upper.wrapping_neg() % upper;
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return Some(x % upper);
            }
        }
    }
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
    fn the_same_seed_replays_the_same_draws() {
        let mut a = Draws::new([7; 32]);
        let mut b = Draws::new([7; 32]);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert_ne!(first[0], first[1]);
        assert_ne!(Draws::new([8; 32]).next_u64(), first[0]);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut draws = Draws::new([1; 32]);
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
}
