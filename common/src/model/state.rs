//! Recurrent state as explicit values (spec §2.1–§2.2, STYLE §5; burn `lstm_state.rs`).
//!
//! The reference keeps a ring buffer `hidden_states`, a write pointer `hidden_pointer` and
//! `cell_states` on the module itself (`code/convlstmcell.py`). Here the same data is a value,
//! [`CellState`], that a cell's `step` takes by reference and returns updated; the modules stay
//! `&self`. [`NetState`] is one `CellState` per recurrent layer of the network.
//!
//! Ring-buffer rule (spec §2.2): when a step starts, slot `pointer` holds the OLDEST stored
//! hidden state, so reading the ring from `pointer` onwards gives H_{t−M} … H_{t−1}. The new
//! hidden state overwrites slot `pointer`, then `pointer ← (pointer + 1) mod modulus`, where the
//! modulus is M (`code/`) or N for the legacy `eval_paper/` behaviour (spec §2.5). The index
//! arithmetic lives in the pure functions [`window_slots`] and [`advance`].

use tch::{Device, Kind, Tensor};

/// State of one recurrent cell: a ring of past hidden states plus the cell state.
///
/// A ConvLSTM cell keeps one slot (H_{t−1}); a Conv-TT-LSTM cell keeps M slots.
#[derive(Debug)]
pub struct CellState {
    /// Ring buffer of the last M hidden states, each `[B, Ch, H, W]`; unwritten slots are zero.
    pub hidden: Vec<Tensor>,
    /// Slot holding the oldest stored state (the next one to be overwritten).
    pub pointer: usize,
    /// Cell state C, `[B, Ch, H, W]`.
    pub cell: Tensor,
}

impl Clone for CellState {
    /// Cheap: tensors are reference-counted handles (`shallow_clone`); cells never modify a
    /// state's tensors in place.
    fn clone(&self) -> Self {
        Self {
            hidden: self.hidden.iter().map(Tensor::shallow_clone).collect(),
            pointer: self.pointer,
            cell: self.cell.shallow_clone(),
        }
    }
}

impl CellState {
    /// The all-zero state of a sequence's first step: `slots` hidden states and the cell state,
    /// each `[batch, channels, height, width]`, pointer 0.
    pub fn zeros(
        slots: usize,
        batch: i64,
        channels: i64,
        height: i64,
        width: i64,
        (kind, device): (Kind, Device),
    ) -> Self {
        debug_assert!(slots >= 1, "a cell keeps at least one hidden state");
        let z = || Tensor::zeros([batch, channels, height, width], (kind, device));
        Self {
            hidden: (0..slots).map(|_| z()).collect(),
            pointer: 0,
            cell: z(),
        }
    }

    /// The most recently written hidden state H_{t−1} (zeros before the first step).
    pub fn latest(&self) -> &Tensor {
        let m = self.hidden.len();
        &self.hidden[(self.pointer + m - 1) % m]
    }

    /// Writes `h` into the pointer's slot and advances the pointer modulo `modulus`; `cell`
    /// becomes the new cell state.
    pub fn push(&self, h: &Tensor, cell: Tensor, modulus: usize) -> Self {
        let mut hidden: Vec<Tensor> = self.hidden.iter().map(Tensor::shallow_clone).collect();
        hidden[self.pointer] = h.shallow_clone();
        let next = Self {
            hidden,
            pointer: advance(self.pointer, modulus),
            cell,
        };
        next.debug_check();
        next
    }

    /// Debug-build shape invariants: every slot and the cell state have one shape, the
    /// pointer is inside the ring.
    pub fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let shape = self.cell.size();
            assert_eq!(
                shape.len(),
                4,
                "cell state must be [B, Ch, H, W], got {shape:?}"
            );
            assert!(
                self.pointer < self.hidden.len(),
                "ring pointer out of range"
            );
            for (i, h) in self.hidden.iter().enumerate() {
                assert_eq!(
                    h.size(),
                    shape,
                    "ring slot {i} has another shape than the cell state"
                );
            }
        }
    }
}

/// The pointer after one write: `(pointer + 1) mod modulus`.
pub fn advance(pointer: usize, modulus: usize) -> usize {
    (pointer + 1) % modulus
}

/// Ring slots of window `l` (0 = oldest window), oldest first: the `window` consecutive slots
/// starting `l` positions after `pointer`, modulo the ring size `steps` (spec §2.2).
pub fn window_slots(pointer: usize, steps: usize, l: usize, window: usize) -> Vec<usize> {
    (0..window).map(|s| (pointer + l + s) % steps).collect()
}

/// State of the whole network: one [`CellState`] per recurrent layer, in layer order
/// (b0l0, b0l1, …).
#[derive(Debug, Clone)]
pub struct NetState {
    /// Per-layer states.
    pub cells: Vec<CellState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates the ring with symbolic time stamps and checks that window l at step t holds
    /// H_{t−M+l} … H_{t−M+l+S−1} (None = never written, i.e. zero), for many (N, M).
    #[test]
    fn windows_hold_the_spec_time_stamps() {
        for steps in 1..=7 {
            for order in 1..=steps {
                let window = steps - order + 1;
                let mut ring: Vec<Option<i64>> = vec![None; steps];
                let mut pointer = 0;
                for t in 0..20i64 {
                    for l in 0..order {
                        let got: Vec<Option<i64>> = window_slots(pointer, steps, l, window)
                            .into_iter()
                            .map(|s| ring[s])
                            .collect();
                        let want: Vec<Option<i64>> = (0..window)
                            .map(|s| {
                                let tau = t - steps as i64 + (l + s) as i64;
                                (tau >= 0).then_some(tau)
                            })
                            .collect();
                        assert_eq!(got, want, "M={steps} N={order} t={t} l={l}");
                    }
                    ring[pointer] = Some(t);
                    pointer = advance(pointer, steps);
                }
            }
        }
    }

    /// The legacy `eval_paper/` pointer (mod N) only ever writes slots 0 … N−1 (issue #2).
    #[test]
    fn legacy_pointer_only_writes_the_first_order_slots() {
        let (steps, order) = (5, 3);
        let mut written = vec![false; steps];
        let mut pointer = 0;
        for _ in 0..50 {
            written[pointer] = true;
            pointer = advance(pointer, order);
        }
        assert_eq!(written, vec![true, true, true, false, false]);
    }

    #[test]
    fn push_writes_the_pointer_slot_and_latest_follows() {
        let opts = (Kind::Float, Device::Cpu);
        let s0 = CellState::zeros(3, 1, 1, 1, 1, opts);
        let s1 = s0.push(
            &Tensor::ones([1, 1, 1, 1], opts),
            s0.cell.shallow_clone(),
            3,
        );
        let s2 = s1.push(
            &(Tensor::ones([1, 1, 1, 1], opts) * 2.0),
            s1.cell.shallow_clone(),
            3,
        );
        assert_eq!(s2.pointer, 2);
        assert_eq!(s2.latest().double_value(&[0, 0, 0, 0]), 2.0);
        assert_eq!(s2.hidden[2].double_value(&[0, 0, 0, 0]), 0.0);
        // The old state is untouched: states are values.
        assert_eq!(s1.latest().double_value(&[0, 0, 0, 0]), 1.0);
        assert_eq!(s0.latest().double_value(&[0, 0, 0, 0]), 0.0);
    }
}
