//! The distributed sampler: which clips each rank reads in an epoch (ARCHITECTURE §4).
//!
//! Pure index arithmetic. The first `n = min(len, cap)` clips of a split are eligible (a cap of
//! 0 means all, like the reference's `--train-samples`, which only ever uses the first clips of a
//! file). In a shuffled epoch they are permuted by a generator seeded with `(seed, epoch)`, the
//! same on every rank; the permutation is cut to `world × (n / world)` clips (drop-last) and rank
//! `r` takes positions `r, r + world, r + 2·world, …`. Hence across all ranks no clip is seen
//! twice in an epoch, every rank gets the same number of clips, and with a per-rank batch of `b`
//! every rank runs the same `(n / world) / b` steps.

use super::rng::Rng;

/// Which clips one rank reads, per epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    world: usize,
    rank: usize,
    seed: u64,
    shuffle: bool,
}

impl DistributedSampler {
    /// A sampler over the first `min(len, cap)` clips (`cap = 0`: all) for `rank` of `world`.
    /// `shuffle = false` (evaluation) keeps index order.
    ///
    /// # Panics
    /// If `world == 0` or `rank >= world` (the launcher guarantees both).
    pub fn new(
        len: usize,
        cap: usize,
        world: usize,
        rank: usize,
        seed: u64,
        shuffle: bool,
    ) -> Self {
        assert!(world > 0 && rank < world, "rank {rank} of world {world}");
        let len = if cap == 0 { len } else { len.min(cap) };
        Self {
            len,
            world,
            rank,
            seed,
            shuffle,
        }
    }

    /// Eligible clips (after the cap).
    pub fn eligible(&self) -> usize {
        self.len
    }

    /// Clips this rank reads per epoch (the same on every rank).
    pub fn per_rank(&self) -> usize {
        self.len / self.world
    }

    /// Steps per epoch with `batch` clips per rank per step (the last partial batch is dropped).
    pub fn steps(&self, batch: usize) -> usize {
        self.per_rank() / batch.max(1)
    }

    /// This rank's clip indices for `epoch`, in reading order.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            Rng::derive(self.seed, &[0x5A3B_1E00, epoch]).shuffle(&mut all);
        }
        all.truncate(self.per_rank() * self.world);
        all.into_iter()
            .skip(self.rank)
            .step_by(self.world)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranks_partition_an_epoch(
            len in 0usize..300, cap in 0usize..400, world in 1usize..9,
            seed in any::<u64>(), epoch in 0u64..1000, shuffle in any::<bool>(), batch in 1usize..9,
        ) {
            let samplers: Vec<_> = (0..world)
                .map(|r| DistributedSampler::new(len, cap, world, r, seed, shuffle))
                .collect();
            let n = if cap == 0 { len } else { len.min(cap) };
            let mut seen = vec![false; n];
            for s in &samplers {
                let idx = s.indices(epoch);
                prop_assert_eq!(idx.len(), n / world);
                prop_assert_eq!(s.steps(batch), samplers[0].steps(batch));
                prop_assert_eq!(&idx, &s.indices(epoch));
                for i in idx {
                    prop_assert!(i < n, "index {} beyond the cap {}", i, n);
                    prop_assert!(!seen[i], "clip {} seen twice", i);
                    seen[i] = true;
                }
            }
            // Drop-last leaves out fewer than `world` clips.
            prop_assert!(n - seen.iter().filter(|&&s| s).count() < world);
        }

        #[test]
        fn epochs_differ_and_order_is_kept_without_shuffle(len in 20usize..200, seed in any::<u64>()) {
            let s = DistributedSampler::new(len, 0, 1, 0, seed, true);
            prop_assert_ne!(s.indices(0), s.indices(1));
            let mut sorted = s.indices(0);
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..len).collect::<Vec<_>>());
            let ordered = DistributedSampler::new(len, 0, 2, 1, seed, false).indices(5);
            prop_assert_eq!(ordered, (0..len / 2 * 2).skip(1).step_by(2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn worked_example() {
        // 10 clips capped to 7, 3 ranks: 2 each, one left out.
        let s = DistributedSampler::new(10, 7, 3, 2, 0, false);
        assert_eq!((s.eligible(), s.per_rank(), s.steps(2)), (7, 2, 1));
        assert_eq!(s.indices(0), vec![2, 5]);
    }
}
