//! Peer recovery's unit of exchange: [`PeerState`], everything the ranks of a data-parallel
//! group share at a recovery point — the flat buffers (parameters, Adam's moments), the
//! cursor, the schedules, the loss scale and where in the loop the group stands — as one
//! byte string with a checksum. A survivor serialises it to prove (by checksum) that it
//! agrees with the others and, as the donor, to hand it to the replacement, which installs
//! it. Nothing rank-specific is in it: a rank's data order and sampling masks are pure
//! functions of (seed, rank, epoch, step), rebuilt from the cursor.
//!
//! # Layout
//! `u32` little-endian header length, the header as TOML ([`Header`]), then the three flat
//! buffers as little-endian `f32`, `numel` values each: parameters, first moment, second
//! moment. The checksum is FNV-1a 64 over all of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::optim::{FlatParams, LossScaler};
use super::save::Cursor;
use super::schedule::Schedules;
use crate::error::{Error, Result};

/// Bumped when the layout changes (both ends run the same build; this catches a mix-up).
pub(crate) const FORMAT: u32 = 1;

/// Where in the training loop a rank stands. The group's ranks always stand at the same one
/// when a recovery starts (collectives keep them in lockstep), and a stage is left only once
/// its work is done, so redoing the stage a recovery interrupted repeats nothing that was
/// recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The head of the epoch loop: go on, or finish.
    Top,
    /// The next step of the current epoch.
    Step,
    /// After a step: the parameter agreement check.
    Check,
    /// After a step: validation, when due.
    Validate,
    /// After a step: commit the checkpoint in flight.
    Commit,
    /// After a step: start a checkpoint, when due (or owed, or preempted).
    Save,
    /// The end of an epoch (validation when `valid_every` is 0, the schedules' epoch update).
    EndEpoch,
    /// The end of training.
    Finish,
}

/// The non-buffer part of [`PeerState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// Values in each flat buffer.
    pub numel: i64,
    /// Where the group stands.
    pub stage: Stage,
    /// The cursor's fields.
    pub step: u64,
    /// The epoch the next step belongs to.
    pub epoch: u64,
    /// Batches of that epoch done.
    pub batches_done: u64,
    /// Clips seen over all ranks.
    pub samples_seen: u64,
    /// Adam steps taken.
    pub adam_steps: u64,
    /// The schedules.
    pub schedules: Schedules,
    /// fp16 loss scaling.
    pub loss_scale: Option<LossScaler>,
    /// The step of the last checkpoint started.
    pub last_saved: u64,
    /// The last step's (all-reduced) loss; NaN before the first.
    pub last_loss: f64,
    /// The last step asked for a preemption.
    pub preempt: bool,
    /// A checkpoint in flight was abandoned: the next `Save` starts one.
    pub owe_checkpoint: bool,
    /// The current step's validation summary (for a checkpoint manifest).
    pub valid_metrics: Option<BTreeMap<String, f64>>,
}

impl Header {
    /// The cursor it holds.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            step: self.step,
            epoch: self.epoch,
            batches_done: self.batches_done,
            samples_seen: self.samples_seen,
        }
    }
}

/// The shared state, serialised.
pub struct PeerState {
    /// The bytes ([module docs](self) give the layout).
    pub bytes: Vec<u8>,
    /// FNV-1a 64 of `bytes`.
    pub checksum: u64,
}

impl PeerState {
    /// Serialises `header` and `flat`'s buffers.
    pub fn encode(header: &Header, flat: &FlatParams) -> PeerState {
        let text = toml::to_string(header).expect("the peer-state header serialises");
        let bufs = flat.to_host();
        let mut bytes = Vec::with_capacity(4 + text.len() + 12 * flat.numel().max(0) as usize);
        bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        for b in &bufs {
            for v in b {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let checksum = convtt_core::protocol::fnv1a64(&bytes);
        PeerState { bytes, checksum }
    }

    /// Parses `bytes` into the header and the three buffers, checking the format and sizes.
    pub fn decode(bytes: &[u8]) -> Result<(Header, [Vec<f32>; 3])> {
        let bad = |msg: String| Error::Peer(format!("peer state: {msg}"));
        let n = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad(format!("{} bytes, too short", bytes.len())))?;
        let text = bytes
            .get(4..4 + n)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or_else(|| bad("the header is truncated or not UTF-8".into()))?;
        let header: Header = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        if header.format != FORMAT {
            return Err(bad(format!(
                "format {} (this worker reads {FORMAT}): worker binaries of different builds",
                header.format
            )));
        }
        let numel = header.numel.max(0) as usize;
        let body = &bytes[4 + n..];
        if body.len() != 12 * numel {
            return Err(bad(format!(
                "{} bytes of buffers, {} expected for {numel} parameters",
                body.len(),
                12 * numel
            )));
        }
        let floats = |k: usize| -> Vec<f32> {
            body[4 * numel * k..4 * numel * (k + 1)]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        Ok((header, [floats(0), floats(1), floats(2)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    fn header(numel: i64) -> Header {
        Header {
            format: FORMAT,
            numel,
            stage: Stage::Validate,
            step: 30,
            epoch: 2,
            batches_done: 4,
            samples_seen: 240,
            adam_steps: 30,
            schedules: Schedules::new(&convtt_core::config::OptimConfig::default()),
            loss_scale: None,
            last_saved: 25,
            last_loss: f64::NAN,
            preempt: false,
            owe_checkpoint: true,
            valid_metrics: Some([("valid.mse".to_owned(), 0.25)].into()),
        }
    }

    fn flat() -> FlatParams {
        let vs = VarStore::new(tch::Device::Cpu);
        let _ = vs
            .root()
            .var("w", &[3, 2], tch::nn::Init::Uniform { lo: -1.0, up: 1.0 });
        let _ = vs.root().var("b", &[5], tch::nn::Init::Const(0.5));
        FlatParams::new(&vs)
    }

    /// What one rank encodes another decodes and installs bit for bit, and encoding the
    /// installed state gives the same bytes (the checksum the launcher compares).
    #[test]
    fn the_state_round_trips_bit_for_bit() {
        let a = flat();
        let _ = a.exp_avg.shallow_clone().fill_(0.125);
        let h = header(a.numel());
        let sent = PeerState::encode(&h, &a);
        let (got, bufs) = PeerState::decode(&sent.bytes).unwrap();
        assert_eq!(got.stage, Stage::Validate);
        assert_eq!(got.cursor(), h.cursor());
        assert!(got.last_loss.is_nan());
        let mut b = flat();
        b.restore(&a.layout.clone(), &bufs, got.adam_steps, "peer".as_ref())
            .unwrap();
        let again = PeerState::encode(&got, &b);
        assert_eq!(again.checksum, sent.checksum);
        assert_eq!(again.bytes, sent.bytes);
    }

    #[test]
    fn damaged_state_is_refused_with_the_reason() {
        let a = flat();
        let sent = PeerState::encode(&header(a.numel()), &a);
        let e = PeerState::decode(&sent.bytes[..sent.bytes.len() - 4]).unwrap_err();
        assert!(e.to_string().contains("bytes of buffers"), "{e}");
        let e = PeerState::decode(&[1, 0]).unwrap_err();
        assert!(e.to_string().contains("too short"), "{e}");
        let mut other = header(a.numel());
        other.format = 99;
        let e = PeerState::decode(&PeerState::encode(&other, &a).bytes).unwrap_err();
        assert!(e.to_string().contains("format 99"), "{e}");
    }
}
