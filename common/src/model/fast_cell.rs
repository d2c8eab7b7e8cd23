//! The cells' fast evaluation: the maths of [`ConvTtLstmCell::step`] and
//! [`ConvLstmCell::step`], split into the part that depends on the input (one convolution,
//! batched over every time step whose input is known) and the recurrent part (step by step),
//! with the Conv-TT-LSTM preprocessing fused. [`wavefront`](super::wavefront) schedules it;
//! [`ComputeMode`] switches it on.
//!
//! The gate convolution over `[X_t | R_t]` (R = T for Conv-TT-LSTM, H_{t−1} for ConvLSTM) is
//! linear in its input channels, so
//!
//! ```text
//! Conv(W, b)([X | R]) = Conv(W[:, :Cin], b)(X) + Conv(W[:, Cin:], 0)(R)
//! ```
//!
//! The first term is the *projection* ([`FastCell::project`]), the second the recurrent term
//! ([`FastCell::recur`]). The sum is the same up to float rounding (the products are added in
//! another order).
//!
//! Fused preprocessing (`fused_tt`): window l's preprocessing convolution P_l over the states
//! of its S slots is `Σ_s P_l[:, s] ⋆ H_slot(l, s)`. Every hidden state passes through every
//! (l, s) position while it is in the ring, so each new H_t is convolved once with all N·S
//! kernel blocks stacked (`[N·S·C, Ch, k, k]`, one convolution) and the result is kept beside
//! the ring ([`FastState::preprocessed`]); U_l is then the bias plus S slices of it. The
//! FLOPs are the same, the convolution count per step drops from N to one.
//!
//! A state fresh from [`FastCell::zero_state`] is all zeros; its recurrent terms are exactly
//! zero (a bias-free convolution of zeros), so the ConvLSTM skips that convolution at t = 0.

use tch::{Device, Tensor};

use super::compute::ComputeMode;
use super::conv::conv2d_same;
use super::conv_lstm_cell::{lstm_update, ConvLstmCell};
use super::conv_tt_lstm_cell::ConvTtLstmCell;
use super::network::Cell;
use super::state::{window_slots, CellState};

/// A cell's state on the fast path: the cell's own [`CellState`] and, with fused
/// preprocessing, every ring slot's convolution with the stacked preprocessing kernels.
#[derive(Debug)]
pub(crate) struct FastState {
    /// Ring, pointer and cell state, as on the reference path.
    pub cell: CellState,
    /// Per ring slot `[B, N·S·C, H, W]` (fused Conv-TT-LSTM only; empty otherwise).
    pub preprocessed: Vec<Tensor>,
    /// Nothing written yet: every tensor is zero.
    pub fresh: bool,
}

/// A cell's weights arranged for the fast path once per rollout (split gate weight, stacked
/// preprocessing kernels, channels-last copies), so the steps reuse them.
#[derive(Debug)]
pub(crate) enum FastCell<'a> {
    /// Conv-TT-LSTM.
    Tt {
        /// The cell.
        cell: &'a ConvTtLstmCell,
        /// `[4Ch, Cin, k, k]`: the gate convolution's input part W.
        input: Tensor,
        /// `[4Ch, C, k, k]`: the gate convolution's T part G(1) (masked when `tt_kernel` < k).
        recurrent: Tensor,
        /// `[4Ch]`.
        bias: Tensor,
        /// `[N·S·C, Ch, k, k]`: block (l, s) is P_l's kernel for window position s.
        preprocess: Option<Tensor>,
    },
    /// ConvLSTM.
    Lstm {
        /// The cell.
        cell: &'a ConvLstmCell,
        /// `[4Ch, Cin, k, k]`.
        input: Tensor,
        /// `[4Ch, Ch, k, k]`.
        recurrent: Tensor,
        /// `[4Ch]`.
        bias: Tensor,
    },
}

impl<'a> FastCell<'a> {
    /// The fast form of `cell` in the current [`ComputeMode`], or `None` for a cell without
    /// one (the classic-TTD ConvLSTM, whose gate weight is a tensor train).
    pub fn prepare(cell: &'a Cell) -> Option<Self> {
        let mode = ComputeMode::current();
        let layout = |w: Tensor| mode.layout(w);
        match cell {
            Cell::Tt(c) => {
                let cfg = c.config();
                let gates = c.gates();
                let weight = match c.gate_mask() {
                    None => gates.weight.shallow_clone(),
                    Some(mask) => gates.masked_weight(mask),
                };
                let cin = cfg.input_channels;
                let parts = weight.split_with_sizes([cin, cfg.rank], 1);
                let preprocess = mode.fused_tt.then(|| {
                    let (ch, s) = (cfg.hidden_channels, cfg.window() as i64);
                    // P_l in the 2-D layout is [C, S·Ch, k, k]; block s is channels s·Ch….
                    let blocks: Vec<Tensor> = c
                        .cttd()
                        .preprocess
                        .iter()
                        .flat_map(|p| p.weight_2d().split(ch, 1).into_iter().take(s as usize))
                        .collect();
                    layout(Tensor::cat(&blocks, 0))
                });
                Some(FastCell::Tt {
                    cell: c,
                    input: layout(parts[0].shallow_clone()),
                    recurrent: layout(parts[1].shallow_clone()),
                    bias: gates.bias.shallow_clone(),
                    preprocess,
                })
            }
            Cell::Lstm(c) => {
                let cfg = c.config();
                let conv = c.conv();
                let parts = conv
                    .weight
                    .split_with_sizes([cfg.input_channels, cfg.hidden_channels], 1);
                Some(FastCell::Lstm {
                    cell: c,
                    input: layout(parts[0].shallow_clone()),
                    recurrent: layout(parts[1].shallow_clone()),
                    bias: conv.bias.shallow_clone(),
                })
            }
            Cell::Ttd(_) => None,
        }
    }

    /// The all-zero state of a sequence's first step, in the mode's layout.
    pub fn zero_state(&self, batch: i64, height: i64, width: i64, device: Device) -> FastState {
        let mode = ComputeMode::current();
        let (mut cell, preprocessed) = match self {
            FastCell::Tt {
                cell, preprocess, ..
            } => {
                let state = cell.zero_state(batch, height, width, device);
                let pre = preprocess.as_ref().map_or_else(Vec::new, |w| {
                    let size = [batch, w.size()[0], height, width];
                    let z = mode.layout(Tensor::zeros(size, (w.kind(), device)));
                    (0..state.hidden.len()).map(|_| z.shallow_clone()).collect()
                });
                (state, pre)
            }
            FastCell::Lstm { cell, .. } => (cell.zero_state(batch, height, width, device), vec![]),
        };
        cell.hidden = cell.hidden.into_iter().map(|t| mode.layout(t)).collect();
        cell.cell = mode.layout(cell.cell);
        FastState {
            cell,
            preprocessed,
            fresh: true,
        }
    }

    /// The input's share of the gate pre-activations, bias included, for any number of
    /// inputs stacked along the batch axis (time steps × samples).
    ///
    /// # Shapes
    /// `x`: `[N, Cin, H, W]` → `[N, 4Ch, H, W]`
    pub fn project(&self, x: &Tensor) -> Tensor {
        let (FastCell::Tt { input, bias, .. } | FastCell::Lstm { input, bias, .. }) = self;
        conv2d_same(x, input, Some(bias))
    }

    /// One recurrent step from the input's projection `zx` (from [`Self::project`]): the
    /// gate pre-activations are `zx` plus the recurrent term; returns H_t and the new state.
    ///
    /// # Shapes
    /// `zx`: `[B, 4Ch, H, W]`, state `[B, Ch, H, W]` → `[B, Ch, H, W]`
    pub fn recur(&self, zx: &Tensor, state: &FastState) -> (Tensor, FastState) {
        match self {
            FastCell::Tt {
                cell,
                recurrent,
                preprocess,
                ..
            } => {
                let cttd = cell.cttd();
                let u = match preprocess {
                    None => cttd.preprocessed(&state.cell),
                    Some(_) => self.fused_windows(state),
                };
                let t = cttd.horner(&u);
                let z = zx + conv2d_same(&t, recurrent, None);
                let (h, c) = lstm_update(&z, &state.cell.cell);
                let modulus = cell.ring_modulus();
                let pointer = state.cell.pointer;
                let preprocessed = match preprocess {
                    None => Vec::new(),
                    Some(w) => {
                        let mut pre: Vec<Tensor> = state
                            .preprocessed
                            .iter()
                            .map(Tensor::shallow_clone)
                            .collect();
                        pre[pointer] = conv2d_same(&h, w, None);
                        pre
                    }
                };
                let next = FastState {
                    cell: state.cell.push(&h, c, modulus),
                    preprocessed,
                    fresh: false,
                };
                (h, next)
            }
            FastCell::Lstm { recurrent, .. } => {
                let z = if state.fresh {
                    zx.shallow_clone()
                } else {
                    zx + conv2d_same(state.cell.latest(), recurrent, None)
                };
                let (h, c) = lstm_update(&z, &state.cell.cell);
                let next = FastState {
                    cell: state.cell.push(&h, c, 1),
                    preprocessed: Vec::new(),
                    fresh: false,
                };
                (h, next)
            }
        }
    }

    /// U_l = b_l + Σ_s (block (l, s) of slot(l, s)'s preprocessed state), oldest window first.
    ///
    /// # Shapes
    /// → N × `[B, C, H, W]`
    fn fused_windows(&self, state: &FastState) -> Vec<Tensor> {
        let FastCell::Tt { cell, .. } = self else {
            unreachable!("only Conv-TT-LSTM cells preprocess")
        };
        let cfg = cell.config();
        let (c, s) = (cfg.rank, cfg.window());
        let steps = state.cell.hidden.len();
        cell.cttd()
            .preprocess
            .iter()
            .enumerate()
            .map(|(l, p)| {
                let bias = p.bias.view([1, c, 1, 1]);
                window_slots(state.cell.pointer, steps, l, s)
                    .into_iter()
                    .enumerate()
                    .fold(bias, |acc, (si, slot)| {
                        acc + state.preprocessed[slot].narrow(1, (l * s + si) as i64 * c, c)
                    })
            })
            .collect()
    }
}
