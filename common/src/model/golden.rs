//! Golden tests: spec §10's numbers from the PyTorch reference (`code/convlstmcell.py`,
//! `code/convlstmnet.py`, f32, CPU), reproduced with the deterministic fill of
//! [`golden_fill`](super::testing::golden_fill).
//!
//! Tolerance: |got − want| ≤ max(1e-5·|want|, 1e-6). The absolute floor is needed because the
//! spec prints six decimals (rounding error up to 5e-7), so values like 0.000920 cannot be
//! checked to 1e-5 relative.

use tch::{nn, Device, Kind, Tensor};

use super::compute::ComputeMode;
use super::conv_lstm_cell::{ConvLstmCell, ConvLstmCellConfig};
use super::conv_tt_lstm_cell::{ConvTtLstmCell, ConvTtLstmCellConfig};
use super::network::{Network, Rollout};
use super::state::CellState;
use super::testing::{device_tests, golden_fill, golden_frame, Tolerance};
use crate::config::{CellKind, ModelConfig};

const REL: f64 = 1e-5;
const ABS: f64 = 1e-6;

/// Spec §10.1 rows: ΣH, H[0,0,0,0], H[0,1,2,3], H[0,3,5,5], H[0,2,3,1], ΣC.
type CellRow = [f64; 6];

const TT_CELL: [CellRow; 7] = [
    [0.864242, -0.032929, -0.059919, 0.092182, 0.018195, 4.094759],
    [1.483095, -0.021903, -0.062339, 0.132702, 0.030265, 7.219828],
    [1.774066, 0.000920, -0.099335, 0.172099, 0.008149, 10.738599],
    [
        1.532968, -0.005513, -0.258261, 0.236596, 0.042334, 15.959641,
    ],
    [
        -1.067838, -0.056658, -0.360603, 0.270121, 0.096556, 21.888044,
    ],
    [
        -4.271209, -0.072512, -0.290479, 0.261066, 0.096210, 27.028447,
    ],
    [
        -7.374093, -0.012642, -0.401259, 0.219975, 0.178795, 28.411814,
    ],
];

const LSTM_CELL: [CellRow; 7] = [
    [
        -2.119059, -0.004140, 0.010742, -0.027820, -0.043161, -4.488415,
    ],
    [
        -3.296389, -0.017922, 0.012299, -0.036940, -0.058521, -7.003754,
    ],
    [
        -3.883723, -0.032721, -0.000104, -0.031303, -0.051824, -8.265069,
    ],
    [
        -4.112405, -0.039421, -0.020902, -0.020896, -0.036958, -8.755300,
    ],
    [
        -4.160024, -0.033620, -0.037120, -0.016122, -0.029536, -8.857485,
    ],
    [
        -4.167912, -0.019714, -0.038449, -0.021469, -0.037358, -8.874482,
    ],
    [
        -4.218887, -0.009017, -0.024632, -0.033576, -0.055292, -8.981975,
    ],
];

fn check_cell_rows(
    table: &str,
    step: impl Fn(&Tensor, &CellState) -> (Tensor, CellState),
    mut state: CellState,
    want: &[CellRow; 7],
    opts: (Kind, Device),
) {
    let mut tol = Tolerance::new(REL, ABS);
    let cols = [
        "ΣH",
        "H[0,0,0,0]",
        "H[0,1,2,3]",
        "H[0,3,5,5]",
        "H[0,2,3,1]",
        "ΣC",
    ];
    for (t, row) in want.iter().enumerate() {
        let x = golden_frame([1, 2, 6, 6], t as i64, opts);
        let (h, next) = step(&x, &state);
        let got = [
            h.sum(Kind::Double).double_value(&[]),
            h.double_value(&[0, 0, 0, 0]),
            h.double_value(&[0, 1, 2, 3]),
            h.double_value(&[0, 3, 5, 5]),
            h.double_value(&[0, 2, 3, 1]),
            next.cell.sum(Kind::Double).double_value(&[]),
        ];
        for ((g, w), c) in got.iter().zip(row).zip(cols) {
            tol.check(&format!("t={t} {c}"), *g, *w);
        }
        state = next;
    }
    tol.finish(table);
}

fn tt_cell_golden(device: Device, kind: Kind) {
    let mut vs = nn::VarStore::new(device);
    let cfg = ConvTtLstmCellConfig {
        input_channels: 2,
        hidden_channels: 4,
        order: 3,
        steps: 5,
        rank: 3,
        kernel: 3,
        tt_kernel: 3,
        ..Default::default()
    };
    let cell = ConvTtLstmCell::new(&vs.root(), &cfg);
    if kind == Kind::Double {
        vs.double();
    }
    golden_fill(&cell.named_parameters(""));
    let state = cell.zero_state(1, 6, 6, device);
    check_cell_rows(
        "§10.1 Conv-TT-LSTM cell",
        |x, s| cell.step(x, s),
        state,
        &TT_CELL,
        (kind, device),
    );
}

fn lstm_cell_golden(device: Device, kind: Kind) {
    let mut vs = nn::VarStore::new(device);
    let cfg = ConvLstmCellConfig {
        input_channels: 2,
        hidden_channels: 4,
        kernel: 3,
        ..Default::default()
    };
    let cell = ConvLstmCell::new(&vs.root(), &cfg);
    if kind == Kind::Double {
        vs.double();
    }
    golden_fill(&cell.named_parameters(""));
    let state = cell.zero_state(1, 6, 6, device);
    check_cell_rows(
        "§10.1 ConvLSTM cell",
        |x, s| cell.step(x, s),
        state,
        &LSTM_CELL,
        (kind, device),
    );
}

device_tests!(tt_cell_golden => tt_cell_golden_cpu, tt_cell_golden_cuda, tt_cell_golden_cuda_f32);
device_tests!(lstm_cell_golden => lstm_cell_golden_cpu, lstm_cell_golden_cuda, lstm_cell_golden_cuda_f32);

/// The network goldens hold on the reference path and on the fast path (wavefront, split gate
/// convolution, fused preprocessing, channels-last, fused cell update).
const NETWORK_MODES: [(&str, ComputeMode); 2] = [
    ("reference path", ComputeMode::REFERENCE),
    (
        "fast path",
        ComputeMode {
            wavefront: true,
            fused_tt: true,
            channels_last: true,
            fused_cell_update: true,
            ..ComputeMode::REFERENCE
        },
    ),
];

/// Spec §10.2 rows per future frame: sum, wsum, y[0,f,0,0,0], y[1,f,0,7,9], y[0,f,0,15,3].
type NetRow = [f64; 5];

/// Runs the §10.2 network (B = 2, 16×16, I = 10, eval rollout) and returns all I + F − 1 = 12
/// outputs `[2, 12, 1, 16, 16]`.
fn golden_network_outputs(
    cfg: &ModelConfig,
    device: Device,
    kind: Kind,
    mode: ComputeMode,
) -> Tensor {
    let _mode = mode.enter();
    let mut vs = nn::VarStore::new(device);
    let net = Network::new(&vs.root(), cfg);
    if kind == Kind::Double {
        vs.double();
    }
    let named = net.named_parameters();
    assert_eq!(
        named.len(),
        if cfg.cell == CellKind::Convlstm {
            26
        } else {
            146
        }
    );
    golden_fill(&named);
    let frames: Vec<Tensor> = (0..10)
        .map(|t| golden_frame([2, 1, 16, 16], t, (kind, device)))
        .collect();
    let frames = Tensor::stack(&frames, 1);
    let rollout = Rollout {
        output_frames: 12,
        ..Rollout::eval(10, 3)
    };
    tch::no_grad(|| net.forward(&frames, &rollout)).expect("valid rollout")
}

fn check_net_rows(table: &str, y: &Tensor, want: &[NetRow; 3], tol: &mut Tolerance) {
    let n = 2 * 16 * 16;
    let weights: Vec<f64> = (0..n).map(|j| (0.05 * j as f64).cos()).collect();
    let weights = Tensor::from_slice(&weights).to_device(y.device());
    for (f, row) in want.iter().enumerate() {
        let frame = y.select(1, 9 + f as i64).to_kind(Kind::Double); // future frame f
        let got = [
            frame.sum(Kind::Double).double_value(&[]),
            (frame.reshape([-1]) * &weights)
                .sum(Kind::Double)
                .double_value(&[]),
            frame.double_value(&[0, 0, 0, 0]),
            frame.double_value(&[1, 0, 7, 9]),
            frame.double_value(&[0, 0, 15, 3]),
        ];
        for ((g, w), c) in got.iter().zip(row).zip(["sum", "wsum", "y0", "y1", "y2"]) {
            tol.check(&format!("{table} frame {f} {c}"), *g, *w);
        }
    }
}

fn tt_net() -> ModelConfig {
    ModelConfig {
        order: 3,
        steps: 5,
        rank: 8,
        ..ModelConfig::default()
    }
}

fn network_tt_3_5_8_golden(device: Device, kind: Kind) {
    for (path, mode) in NETWORK_MODES {
        network_tt_3_5_8_golden_in(device, kind, mode, path);
    }
}

fn network_tt_3_5_8_golden_in(device: Device, kind: Kind, mode: ComputeMode, path: &str) {
    let y = golden_network_outputs(&tt_net(), device, kind, mode);
    let mut tol = Tolerance::new(REL, ABS);
    let rows = [
        [-76.054431, -1.358550, -0.148705, -0.148400, -0.149094],
        [-76.072670, -1.358997, -0.148742, -0.148434, -0.149133],
        [-76.081676, -1.359218, -0.148760, -0.148451, -0.149152],
    ];
    check_net_rows("TT 3/5/8", &y, &rows, &mut tol);
    let step_sums = [
        -55.5858, -65.9573, -71.0834, -73.6151, -74.8668, -75.4856, -75.7915, -75.9428, -76.0175,
        -76.0544, -76.0727, -76.0817,
    ];
    for (t, want) in step_sums.iter().enumerate() {
        let got = y.select(1, t as i64).sum(Kind::Double).double_value(&[]);
        // Printed with four decimals: the absolute floor is 5e-5 here.
        let mut t4 = Tolerance::new(REL, 5e-5);
        t4.check(&format!("step {t} sum"), got, *want);
        t4.finish(&format!("§10.2 TT 3/5/8 step {t} sum, {path}"));
    }
    tol.finish(&format!("§10.2 TT N=3 M=5 C=8, {path}"));
}

fn network_convlstm_golden(device: Device, kind: Kind) {
    let cfg = ModelConfig {
        cell: CellKind::Convlstm,
        ..ModelConfig::default()
    };
    let rows = [
        [-119.272708, -2.096562, -0.232699, -0.233016, -0.233042],
        [-119.330142, -2.097545, -0.232809, -0.233128, -0.233154],
        [-119.359065, -2.098037, -0.232865, -0.233185, -0.233211],
    ];
    for (path, mode) in NETWORK_MODES {
        let y = golden_network_outputs(&cfg, device, kind, mode);
        let mut tol = Tolerance::new(REL, ABS);
        check_net_rows("ConvLSTM", &y, &rows, &mut tol);
        tol.finish(&format!("§10.2 ConvLSTM, {path}"));
    }
}

fn network_released_golden(device: Device, kind: Kind) {
    let rows = [
        [-76.029955, -1.362767, -0.148724, -0.148244, -0.149060],
        [-76.046829, -1.363339, -0.148760, -0.148271, -0.149097],
        [-76.054903, -1.363641, -0.148778, -0.148282, -0.149116],
    ];
    for (path, mode) in NETWORK_MODES {
        let y = golden_network_outputs(&ModelConfig::default(), device, kind, mode);
        let mut tol = Tolerance::new(REL, ABS);
        check_net_rows("TT 3/3/8", &y, &rows, &mut tol);
        tol.finish(&format!("§10.2 TT N=3 M=3 C=8 (released), {path}"));
    }
}

device_tests!(network_tt_3_5_8_golden => network_tt_3_5_8_golden_cpu, network_tt_3_5_8_golden_cuda, network_tt_3_5_8_golden_cuda_f32);
device_tests!(network_convlstm_golden => network_convlstm_golden_cpu, network_convlstm_golden_cuda, network_convlstm_golden_cuda_f32);
device_tests!(network_released_golden => network_released_golden_cpu, network_released_golden_cuda, network_released_golden_cuda_f32);
