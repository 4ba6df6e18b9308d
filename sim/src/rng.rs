//! Seeded randomness: one ChaCha8 stream per purpose, each derived from the run's `u64` seed and
//! the purpose's name, so changing one option (say, the transfer rate) does not reshuffle the
//! network or the faults.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// The stream for `purpose` ("network", "faults", "metrics", "workload", ...).
    pub fn stream(seed: u64, purpose: &str) -> SimRng {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tinychain-sim/stream/v1");
        hasher.update(&seed.to_le_bytes());
        hasher.update(purpose.as_bytes());
        SimRng(ChaCha8Rng::from_seed(*hasher.finalize().as_bytes()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..bound` (0 when `bound` is 0). The modulo bias is below 2^-40 for the
    /// bounds used here, far under anything a simulation could notice.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.next_u64() % bound
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "range {low}..={high} is empty");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// Uniform in `-magnitude..=magnitude`.
    pub fn signed(&mut self, magnitude: u64) -> i64 {
        let magnitude = i64::try_from(magnitude).expect("magnitudes are small");
        i64::try_from(self.range(0, 2 * magnitude as u64)).expect("small") - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let first: Vec<u64> = (0..4).map(|_| SimRng::stream(7, "network").next_u64()).collect();
        assert!(first.windows(2).all(|pair| pair[0] == pair[1]));
        assert_ne!(SimRng::stream(7, "network").next_u64(), SimRng::stream(7, "faults").next_u64());
        assert_ne!(SimRng::stream(7, "network").next_u64(), SimRng::stream(8, "network").next_u64());
        let mut rng = SimRng::stream(1, "x");
        for _ in 0..1000 {
            let value = rng.range(3, 5);
            assert!((3..=5).contains(&value));
            assert!((-2..=2).contains(&rng.signed(2)));
        }
    }
}
