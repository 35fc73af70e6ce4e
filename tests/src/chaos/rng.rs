//! SplitMix64: a tiny seeded generator for the campaign's choices (which operation, which name),
//! so that a seed replays the same client schedule. Not for anything secret.

/// Steele, Lea and Flood's SplitMix64: 64 bits of state, every seed fine.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; 0 gives 0). Multiply-shift, unbiased enough here.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// An independent generator for sub-task `stream` (each client its own).
    pub fn fork(&self, stream: u64) -> SplitMix64 {
        let mut mixer = SplitMix64::new(self.state ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        SplitMix64::new(mixer.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_sequence_is_kept() {
        // The first outputs for seed 1234567, as the reference implementation gives them.
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    #[test]
    fn below_stays_in_bounds_and_forks_differ() {
        let mut rng = SplitMix64::new(7);
        assert!((0..1000).all(|_| rng.below(12) < 12));
        assert_eq!(rng.below(0), 0);
        let (mut a, mut b) = (rng.fork(1), rng.fork(2));
        assert_ne!(a.next_u64(), b.next_u64());
        let (mut c, mut d) = (rng.fork(1), rng.fork(1));
        assert_eq!(c.next_u64(), d.next_u64());
    }
}
