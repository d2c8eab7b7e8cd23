//! Learning-rate and scheduled-sampling schedules as plain state machines (spec §4.4).
//!
//! `plateau` reproduces the reference's `code/model_train.py`: both the learning rate and the
//! scheduled-sampling ratio r start constant; when validation has not improved for
//! `plateau_epochs` epochs, r starts decaying (and the plateau clock restarts); after a second
//! plateau the learning rate starts decaying. Once active a decay stays active. `step` decays from
//! the first epoch; `cosine` follows a half cosine over the run's steps; `constant` never changes.

use convtt_common::config::{OptimConfig, Schedule};
use serde::{Deserialize, Serialize};

/// Schedule state; saved in checkpoints so a resumed run continues the same curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    /// Current learning rate (before the cosine factor, which depends on the step).
    pub lr: f64,
    /// Current scheduled-sampling ratio r.
    pub ss_ratio: f64,
    /// Learning-rate decay switched on.
    pub lr_decay_active: bool,
    /// Scheduled-sampling decay switched on.
    pub ss_decay_active: bool,
    /// Best validation loss so far.
    pub best_valid: f64,
    /// 1-based epoch of the best validation loss (as the reference stores it).
    pub best_epoch: usize,
}

impl Schedules {
    /// The state at the start of training.
    pub fn new(cfg: &OptimConfig) -> Self {
        Schedules {
            lr: cfg.learning_rate,
            ss_ratio: cfg.ss_ratio_start,
            lr_decay_active: cfg.lr_schedule == Schedule::Step,
            ss_decay_active: cfg.ss_schedule == Schedule::Step,
            best_valid: f64::INFINITY,
            best_epoch: 0,
        }
    }

    /// Learning rate for optimizer step `step` of `total_steps` (cosine depends on the step).
    pub fn lr_at(&self, cfg: &OptimConfig, step: u64, total_steps: u64) -> f64 {
        match cfg.lr_schedule {
            Schedule::Cosine => cosine(cfg.learning_rate, cfg.min_learning_rate, step, total_steps),
            _ => self.lr,
        }
    }

    /// Scheduled-sampling ratio for step `step` of `total_steps`.
    pub fn ss_ratio_at(&self, cfg: &OptimConfig, step: u64, total_steps: u64) -> f64 {
        match cfg.ss_schedule {
            Schedule::Cosine => cosine(cfg.ss_ratio_start, 0.0, step, total_steps),
            _ => self.ss_ratio,
        }
    }

    /// Advances the state at the end of 0-based epoch `epoch`, given that epoch's validation loss
    /// (None when no validation ran). Order as in the reference: decays, then bookkeeping.
    pub fn end_epoch(&mut self, cfg: &OptimConfig, epoch: usize, valid_loss: Option<f64>) {
        let e1 = epoch + 1;
        if self.lr_decay_active && e1.is_multiple_of(cfg.lr_decay_epochs) {
            self.lr *= cfg.lr_decay_rate;
        }
        if self.ss_decay_active && e1.is_multiple_of(cfg.ss_decay_epochs) {
            self.ss_ratio = (self.ss_ratio - cfg.ss_decay).max(0.0);
        }
        if let Some(loss) = valid_loss {
            if loss < self.best_valid {
                self.best_valid = loss;
                self.best_epoch = e1;
            }
        }
        let plateau = epoch > self.best_epoch + cfg.plateau_epochs;
        if cfg.ss_schedule == Schedule::Plateau && !self.ss_decay_active && plateau {
            self.ss_decay_active = true;
            self.best_epoch = epoch;
        } else if cfg.lr_schedule == Schedule::Plateau && !self.lr_decay_active && plateau {
            self.lr_decay_active = true;
        }
    }
}

fn cosine(start: f64, floor: f64, step: u64, total: u64) -> f64 {
    let p = if total == 0 {
        1.0
    } else {
        (step as f64 / total as f64).min(1.0)
    };
    floor + (start - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lr: Schedule, ss: Schedule) -> OptimConfig {
        OptimConfig {
            lr_schedule: lr,
            ss_schedule: ss,
            plateau_epochs: 2,
            ..Default::default()
        }
    }

    #[test]
    fn plateau_starts_sampling_decay_then_lr_decay_after_a_second_plateau() {
        let c = OptimConfig {
            lr_decay_epochs: 1,
            ..cfg(Schedule::Plateau, Schedule::Plateau)
        };
        let mut s = Schedules::new(&c);
        // Improves for 2 epochs (best_epoch = 2), then flat.
        let losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95];
        let mut trace = Vec::new();
        for (e, l) in losses.iter().enumerate() {
            s.end_epoch(&c, e, Some(*l));
            trace.push((s.ss_decay_active, s.lr_decay_active));
        }
        // e = 5 > best_epoch 2 + 2: sampling decay on, best_epoch := 5.
        assert_eq!(trace[4], (false, false));
        assert_eq!(trace[5], (true, false));
        // e = 8 > 5 + 2: lr decay on.
        assert_eq!(trace[7], (true, false));
        assert_eq!(trace[8], (true, true));
        // r decayed at the end of epochs 6..=9, the lr at the end of epoch 9 (decays are applied
        // before that epoch's plateau bookkeeping).
        assert!(
            (s.ss_ratio - (1.0 - 4.0 * c.ss_decay)).abs() < 1e-12,
            "{}",
            s.ss_ratio
        );
        assert!(
            (s.lr - c.learning_rate * c.lr_decay_rate).abs() < 1e-15,
            "{}",
            s.lr
        );
    }

    #[test]
    fn step_decays_from_the_start_at_its_period_and_r_stops_at_zero() {
        let c = OptimConfig {
            lr_decay_epochs: 5,
            ss_decay: 0.3,
            ..cfg(Schedule::Step, Schedule::Step)
        };
        let mut s = Schedules::new(&c);
        for e in 0..10 {
            s.end_epoch(&c, e, None);
        }
        assert!((s.lr - c.learning_rate * 0.98 * 0.98).abs() < 1e-15);
        assert_eq!(s.ss_ratio, 0.0);
    }

    #[test]
    fn constant_never_changes_and_cosine_ends_at_the_floor() {
        let c = OptimConfig {
            min_learning_rate: 1e-5,
            ..cfg(Schedule::Cosine, Schedule::Constant)
        };
        let mut s = Schedules::new(&c);
        for e in 0..50 {
            s.end_epoch(&c, e, Some(1.0));
        }
        assert_eq!(s.ss_ratio_at(&c, 500, 1000), c.ss_ratio_start);
        assert_eq!(s.lr_at(&c, 0, 1000), c.learning_rate);
        assert!((s.lr_at(&c, 500, 1000) - (1e-3 + 1e-5) / 2.0).abs() < 1e-15);
        assert!((s.lr_at(&c, 1000, 1000) - 1e-5).abs() < 1e-18);
    }

    #[test]
    fn state_round_trips_through_toml() {
        let c = cfg(Schedule::Plateau, Schedule::Plateau);
        let mut s = Schedules::new(&c);
        s.end_epoch(&c, 0, Some(0.5));
        let back: Schedules = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, back);
    }
}
