//! Straggler detection, pure: each worker reports its compute time per step (forward, backward,
//! optimizer — collective waits excluded — averaged over its last steps) with its heartbeats;
//! a rank whose figure exceeds `launch.straggler_ratio` × the median of this node's ranks is
//! flagged, and cleared once it drops below the ratio again. Reported only: nothing is done
//! about a straggler (a slow rank is not wrong, and replacing it would cost more than it
//! saves on the hardware we know).

use std::collections::{BTreeMap, BTreeSet};

/// A change in who straggles.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `rank` is `ratio` × the median compute time.
    Flagged {
        /// The rank.
        rank: u32,
        /// Its compute time per step, ms.
        compute_ms: f64,
        /// The median of this node's ranks, ms.
        median_ms: f64,
        /// `compute_ms / median_ms`.
        ratio: f64,
    },
    /// `rank` is back within the ratio.
    Cleared {
        /// The rank.
        rank: u32,
    },
}

/// The detector of one attempt on one node.
#[derive(Debug, Clone)]
pub struct Detector {
    ratio: f64,
    ranks: usize,
    latest: BTreeMap<u32, f64>,
    flagged: BTreeSet<u32>,
}

impl Detector {
    /// For `ranks` local ranks; `ratio` 0 turns detection off.
    pub fn new(ratio: f64, ranks: usize) -> Detector {
        Detector {
            ratio,
            ranks,
            latest: BTreeMap::new(),
            flagged: BTreeSet::new(),
        }
    }

    /// The ranks flagged now.
    pub fn flagged(&self) -> &BTreeSet<u32> {
        &self.flagged
    }

    /// Rank `rank` reports `compute_ms` (0: not measured yet). Returns what changed once every
    /// local rank has reported.
    pub fn update(&mut self, rank: u32, compute_ms: f64) -> Vec<Change> {
        if self.ratio <= 0.0 || self.ranks < 2 || compute_ms <= 0.0 || !compute_ms.is_finite() {
            return Vec::new();
        }
        self.latest.insert(rank, compute_ms);
        if self.latest.len() < self.ranks {
            return Vec::new();
        }
        let median = median(self.latest.values().copied().collect());
        let mut out = Vec::new();
        for (&r, &ms) in &self.latest {
            let ratio = ms / median;
            let slow = ratio > self.ratio;
            if slow && self.flagged.insert(r) {
                out.push(Change::Flagged {
                    rank: r,
                    compute_ms: ms,
                    median_ms: median,
                    ratio,
                });
            } else if !slow && self.flagged.remove(&r) {
                out.push(Change::Cleared { rank: r });
            }
        }
        out
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rank_is_flagged_once_and_cleared_when_it_recovers() {
        let mut d = Detector::new(1.3, 4);
        assert!(d.update(0, 100.0).is_empty(), "not every rank reported yet");
        d.update(1, 104.0);
        d.update(2, 98.0);
        let c = d.update(3, 180.0);
        assert_eq!(c.len(), 1);
        let Change::Flagged {
            rank,
            ratio,
            median_ms,
            ..
        } = c[0]
        else {
            panic!("{c:?}")
        };
        assert_eq!((rank, median_ms), (3, 102.0));
        assert!((ratio - 180.0 / 102.0).abs() < 1e-12);
        assert!(d.update(3, 190.0).is_empty(), "flagged once");
        assert_eq!(d.update(3, 101.0), vec![Change::Cleared { rank: 3 }]);
        assert!(d.flagged().is_empty());
    }

    #[test]
    fn even_ranks_jitter_and_disabled_detection_flag_nobody() {
        let mut d = Detector::new(1.3, 2);
        for (a, b) in [(500.0, 560.0), (610.0, 540.0), (480.0, 700.0)] {
            assert!(d.update(0, a).is_empty() && d.update(1, b).is_empty());
        }
        let mut off = Detector::new(0.0, 2);
        off.update(0, 1.0);
        assert!(off.update(1, 1000.0).is_empty());
        let mut alone = Detector::new(1.3, 1);
        assert!(alone.update(0, 1000.0).is_empty());
    }
}
