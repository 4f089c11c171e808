//! Counter-based random numbers: every draw is a pure function of
//! (seed, epoch, sample position, transform index, draw index), so a batch decodes to
//! the same bytes whatever the thread count, the batch split or the timing.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a bijective 64-bit mixer with full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The draws of one transform of one sample.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    key: u64,
    counter: u64,
}

impl Stream {
    pub fn new(seed: u64, epoch: u64, position: u64, transform: u64) -> Stream {
        let mut key = mix(seed.wrapping_add(GOLDEN));
        for part in [epoch, position, transform] {
            key = mix(key ^ mix(part.wrapping_add(GOLDEN)));
        }
        Stream { key, counter: 0 }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.counter += 1;
        let bits = mix(self.key.wrapping_add(self.counter.wrapping_mul(GOLDEN)));
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi), as torch's `uniform_(lo, hi)`.
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.uniform() * (hi - lo)
    }

    /// Integer in [lo, hi), as torch's `randint(lo, hi)`.
    pub fn randint(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.uniform() * (hi - lo) as f64).floor() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_keyed() {
        let a: Vec<f64> = (0..4).map({
            let mut s = Stream::new(1, 2, 3, 0);
            move |_| s.uniform()
        }).collect();
        let mut s = Stream::new(1, 2, 3, 0);
        assert_eq!(a, (0..4).map(|_| s.uniform()).collect::<Vec<_>>());
        let mut other = Stream::new(1, 2, 4, 0);
        assert_ne!(a[0], other.uniform());
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn roughly_uniform() {
        let mean: f64 = (0..10_000).map(|p| Stream::new(0, 0, p, 0).uniform()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
