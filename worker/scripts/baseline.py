#!/usr/bin/env python3
"""The PyTorch baseline: the same Conv-TT-LSTM network and training step as convtt, written in
plain PyTorch from ../shared/spec/reference-model.md, as a researcher would otherwise run it.

It is convtt's standing performance yardstick on every device (see docs/benchmarks.md): the
same config file drives both, and `selftest` proves the network is the same one by reproducing
the reference's golden vectors (spec §10.2).

    baseline.py selftest
    baseline.py bench --config C [--set k=v ...] [--device cpu|cuda] [--precision f32|tf32|bf16]
                      [--compile] [--steps N] [--warmup W] [--threads T] [--json]
    baseline.py train --config C [--set ...] --seconds S --out weights.safetensors [...]

Model (spec §2–§3): ConvTTLSTM / ConvLSTM cells, 4 blocks with skips, 1×1 output head, stride-1
"same" convolutions. The preprocessing convolutions use the `code_opt/` layout (a Conv2d over
the S window states concatenated along channels), which is how the reference's optimised code
runs them; `--out` writes the `code/` layout under the reference parameter names, which
`convtt-worker eval --weights` and `forward --weights` read.

Training step (spec §3.2, §4): frames 0 … I+F−2 in, scheduled-sampling mix m·truth + (1−m)·pred
with m ~ Bernoulli(r) per sample and future step (r = optim.ss_ratio_start), mean L1 + mean L2
over the I+F−1 outputs, backward, optional global-norm clipping, Adam. Precision: `f32` (TF32
off), `tf32` (TF32 convolutions and matmuls), `bf16` (torch.autocast to bfloat16).

Only the standard library, torch and (for data) h5py are needed; the config is TOML read with
tomllib, with convtt's defaults for absent keys.
"""

import time

# `train --seconds` counts from here (process start, torch's import included), the same rule
# gpu-check applies to convtt (launcher start to stop signal).
T_START = time.perf_counter()

import argparse
import json
import math
import os
import pathlib
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = None

import torch
import torch.nn as nn
import torch.nn.functional as F

# convtt's defaults (common/core/src/config/*.rs) for the keys the baseline reads.
DEFAULTS = {
    "model": {
        "cell": "convttlstm", "filter_size": 5, "order": 3, "rank": 8, "steps": 3,
        "image_channels": 1, "block_widths": [32, 48, 48, 32], "layers_per_block": 3,
        "skip_stride": 2, "output_sigmoid": False, "init": "pytorch", "tt_filter_size": 0,
        "legacy_pointer_mod_order": False,
    },
    "data": {"dataset": "", "input_frames": 10, "future_frames": 10, "batch_size": 8,
             "height": 64, "width": 64},
    "train": {"seed": 0, "threads": 0},
    "optim": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
              "weight_decay": 0.0, "gradient_clipping": False, "clipping_threshold": 3.0,
              "ss_ratio_start": 1.0},
}


class UsageError(Exception):
    """A bad argument or config: exit 2 with the message."""


# --------------------------------------------------------------------------------------------
# Configuration


def parse_value(text):
    """A `--set` value: TOML if it parses (3, true, [8, 8], "x"), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def load_config(path, overrides):
    if tomllib is None:
        raise UsageError("Python 3.11 or newer is needed (tomllib)")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the config: {e}")
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}")
    cfg = {s: dict(v) for s, v in DEFAULTS.items()}
    for section, values in raw.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected section.key=value")
        cfg.setdefault(section, {})[name] = parse_value(value.strip())
    m = cfg["model"]
    if m["cell"] not in ("convttlstm", "convlstm"):
        raise UsageError(f"model.cell = {m['cell']!r}: the baseline has convttlstm and convlstm")
    if m["tt_filter_size"] not in (0, m["filter_size"]):
        raise UsageError("model.tt_filter_size: the baseline uses filter_size everywhere")
    if m["legacy_pointer_mod_order"]:
        raise UsageError("model.legacy_pointer_mod_order is not in the baseline")
    if m["cell"] == "convttlstm" and m["steps"] < m["order"]:
        raise UsageError("model.steps must be at least model.order")
    return cfg


# --------------------------------------------------------------------------------------------
# The network (spec §2, §3)


def conv(cin, cout, k):
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class ConvLSTMCell(nn.Module):
    """Spec §2.1: one Conv(Cin + Ch → 4·Ch) over [X, H]; gates i, f, o, g."""

    def __init__(self, cin, ch, k):
        super().__init__()
        self.ch = ch
        self.conv = conv(cin + ch, 4 * ch, k)

    def initial(self, x):
        z = x.new_zeros(x.shape[0], self.ch, x.shape[2], x.shape[3])
        return (z, z)

    def forward(self, x, state):
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.ch, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvTTLSTMCell(nn.Module):
    """Spec §2.2 in the `code_opt/` layout (§2.3): `layers` = N−1 TT cores Conv(C → C) and the
    gate conv Conv(Cin + C → 4·Ch); `layers_` = N preprocessing Conv(S·Ch → C) over the windows
    of the ring of M past hidden states (oldest first)."""

    def __init__(self, cin, ch, order, steps, rank, k):
        super().__init__()
        self.ch, self.order, self.steps = ch, order, steps
        self.window = steps - order + 1
        self.layers = nn.ModuleList(
            [conv(rank, rank, k) for _ in range(order - 1)] + [conv(cin + rank, 4 * ch, k)])
        self.layers_ = nn.ModuleList(
            [conv(self.window * ch, rank, k) for _ in range(order)])

    def initial(self, x):
        z = x.new_zeros(x.shape[0], self.ch, x.shape[2], x.shape[3])
        return ([z] * self.steps, 0, z)

    def forward(self, x, state):
        ring, p, c = state
        m = self.steps
        t = None
        for l in range(self.order):
            win = torch.cat([ring[(p + l + s) % m] for s in range(self.window)], 1)
            u = self.layers_[l](win)
            t = u if l == 0 else u + self.layers[l - 1](t)
        i, f, o, g = torch.split(self.layers[-1](torch.cat([x, t], 1)), self.ch, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ring = list(ring)
        ring[p] = h
        return h, (ring, (p + 1) % m, c)


class Network(nn.Module):
    """Spec §3.1: blocks of recurrent layers, block b > skip_stride also gets block
    b − 1 − skip_stride's output, the head gets [last block | the FIFO head]."""

    def __init__(self, m):
        super().__init__()
        k, widths, per = m["filter_size"], m["block_widths"], m["layers_per_block"]
        self.skip, self.sigmoid = m["skip_stride"], m["output_sigmoid"]
        self.layers = nn.ModuleDict()
        self.ids = []
        for b, width in enumerate(widths):
            for l in range(per):
                if l > 0:
                    cin = width
                elif b == 0:
                    cin = m["image_channels"]
                else:
                    prev = b - 1
                    cin = widths[prev] + (widths[prev - self.skip] if prev >= self.skip else 0)
                if m["cell"] == "convttlstm":
                    cell = ConvTTLSTMCell(cin, width, m["order"], m["steps"], m["rank"], k)
                else:
                    cell = ConvLSTMCell(cin, width, k)
                lid = f"b{b}l{l}"
                self.layers[lid] = cell
                self.ids.append((b, lid))
        last = len(widths) - 1
        head_in = widths[last] + (widths[last - self.skip] if last >= self.skip else 0)
        self.layers["output"] = nn.Conv2d(head_in, m["image_channels"], 1, bias=True)
        self.blocks = len(widths)
        self.per = per

    def step(self, x, states):
        queue = []
        new_states = {}
        for b in range(self.blocks):
            for l in range(self.per):
                lid = f"b{b}l{l}"
                x, new_states[lid] = self.layers[lid](x, states[lid])
            queue.append(x)
            if b >= self.skip:
                x = torch.cat([x, queue.pop(0)], 1)
        y = self.layers["output"](x)
        return (torch.sigmoid(y) if self.sigmoid else y), new_states

    def forward(self, frames, input_frames, future_frames, mask=None):
        """frames [B, T, C, H, W] (T ≥ I; with `mask` [B, F−1] teacher forcing mixes truth in
        after the conditioning frames). Returns the I + F − 1 outputs [B, I+F−1, C, H, W]."""
        total = input_frames + future_frames - 1
        states = {lid: self.layers[lid].initial(frames[:, 0]) for _, lid in self.ids}
        outputs = []
        for t in range(total):
            if t < input_frames:
                x = frames[:, t]
            elif mask is None:
                x = outputs[-1]
            else:
                m = mask[:, t - input_frames].view(-1, 1, 1, 1)
                x = m * frames[:, t] + (1 - m) * outputs[-1]
            y, states = self.step(x, states)
            outputs.append(y)
        return torch.stack(outputs, 1)


def init_weights(net, scheme):
    """`pytorch` (nn.Conv2d's default, as the reference's code/) or `xavier` (eval_paper/:
    Xavier-uniform weights, zero biases)."""
    if scheme == "pytorch":
        return
    if scheme != "xavier":
        raise UsageError(f"model.init = {scheme!r}: the baseline has pytorch and xavier")
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)


def is_preprocess_weight(name):
    """A preprocessing convolution's weight (`…layers_.l.weight`): 5-D in the `code/` layout."""
    parts = name.split(".")
    return len(parts) >= 3 and parts[-3] == "layers_" and parts[-1] == "weight"


def reference_state_dict(net, m):
    """The parameters under the reference names in the `code/` layout (5-D preprocessing
    weights [C, Ch, k, k, S], spec §2.4), in state_dict order."""
    out = {}
    for name, t in net.state_dict().items():
        t = t.detach().float().cpu()
        if is_preprocess_weight(name):
            s = m["steps"] - m["order"] + 1
            c, sch, k, _ = t.shape
            t = t.reshape(c, s, sch // s, k, k).permute(0, 2, 3, 4, 1)
        out[name] = t.contiguous()
    return out


def save_safetensors(tensors, path):
    """safetensors file of f32 tensors (the format is 8 bytes of header length, a JSON header,
    then the raw little-endian data), written atomically."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.numpy().astype("<f4").tobytes() if hasattr(t, "numpy") else bytes(t)
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Data: convtt's HDF5 shards (docs/data.md)


def load_split(cfg, split, frames, limit=0):
    """The clips of `split` as float32 [N, frames, C, H, W] in [0, 1]."""
    import h5py  # only needed with data

    root = pathlib.Path(cfg["data"]["dataset"])
    try:
        with open(root / "dataset.toml", "rb") as f:
            manifest = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"{root}: not a convtt dataset ({e}); make one with convtt-data")
    shards = manifest.get("splits", {}).get(split, {}).get("shards", [])
    if not shards:
        raise UsageError(f"{root}: no split {split!r}")
    chunks, n = [], 0
    for shard in shards:
        with h5py.File(root / shard["path"], "r") as f:
            clips = f["clips"][:, :frames]
        chunks.append(torch.from_numpy(clips))
        n += clips.shape[0]
        if limit and n >= limit:
            break
    data = torch.cat(chunks)[: limit or None]
    want = (cfg["data"]["height"], cfg["data"]["width"])
    if tuple(data.shape[-2:]) != want:
        raise UsageError(f"{root}: clips are {tuple(data.shape[-2:])}, the config wants {want}")
    return data


# --------------------------------------------------------------------------------------------
# The training step


class Trainer:
    def __init__(self, cfg, device, precision, compile_model):
        self.cfg = cfg
        self.device = torch.device(device)
        m, o = cfg["model"], cfg["optim"]
        torch.manual_seed(int(cfg["train"]["seed"]))
        self.net = Network(m)
        init_weights(self.net, m["init"])
        self.net.to(self.device)
        self.opt = torch.optim.Adam(
            self.net.parameters(), lr=o["learning_rate"], betas=(o["beta1"], o["beta2"]),
            eps=o["eps"], weight_decay=o["weight_decay"])
        self.precision = precision
        tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        self.forward = torch.compile(self.net) if compile_model else self.net
        d = cfg["data"]
        self.input, self.future = d["input_frames"], d["future_frames"]

    def step(self, clips, times=None):
        """One optimizer step on clips [B, I+F, C, H, W] (on the device)."""
        o = self.cfg["optim"]
        b = clips.shape[0]
        total = self.input + self.future - 1
        mask = None
        r = float(o["ss_ratio_start"])
        if r > 1e-6 and self.future > 1:
            mask = torch.bernoulli(torch.full((b, self.future - 1), r, device=self.device))
        sync = self.device.type == "cuda"
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            out = self.forward(clips[:, :total], self.input, self.future, mask)
            target = clips[:, 1:total + 1]
            out = out.float()
            loss = F.l1_loss(out, target) + F.mse_loss(out, target)
        if sync:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if o["gradient_clipping"]:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), o["clipping_threshold"])
        self.opt.step()
        if sync:
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        if times is not None:
            times["forward"] += t1 - t0
            times["backward"] += t2 - t1
            times["optimizer"] += t3 - t2
        return loss

    def predict(self, clips, times=None):
        """One inference rollout (the I conditioning frames in, F predicted, no gradients); the
        rollout's time counts as forward. Returns the predictions' mean (a scalar to print)."""
        sync = self.device.type == "cuda"
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                             enabled=self.precision == "bf16"):
            out = self.forward(clips[:, :self.input], self.input, self.future)
        if sync:
            torch.cuda.synchronize()
        if times is not None:
            times["forward"] += time.perf_counter() - t0
        return out[:, -self.future:].float().mean()


def batches(clips, batch, seed, device):
    """Endless shuffled batches (an epoch is a permutation; drop_last) moved to `device`."""
    g = torch.Generator().manual_seed(seed)
    n = clips.shape[0]
    if n < batch:
        raise UsageError(f"{n} training clips: too few for one batch of {batch}")
    pin = device.type == "cuda"
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n - batch + 1, batch):
            x = clips[order[i:i + batch]]
            if pin:
                x = x.pin_memory()
            yield x.to(device, non_blocking=True).float().div_(255.0)


def training_clips(cfg, device, steps_needed):
    """The training split when `data.dataset` is set, else random clips (bench only)."""
    d = cfg["data"]
    frames = d["input_frames"] + d["future_frames"]
    if d["dataset"]:
        return load_split(cfg, "train", frames)
    g = torch.Generator().manual_seed(0)
    shape = (max(d["batch_size"] * 4, 1), frames, cfg["model"]["image_channels"],
             d["height"], d["width"])
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def setup_threads(n):
    if n and n > 0:
        torch.set_num_threads(n)
    elif hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))


def peak_device_mib(device):
    """Peak of PyTorch's allocator (tensors only)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


class DriverMemory:
    """Peak device memory in use as the driver reports it (total − free, sampled after every
    step: context and caching-allocator reserve included), the way convtt's bench measures."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.peak = 0

    def sample(self):
        if self.cuda:
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)

    def mib(self):
        return self.peak / 2**20 if self.cuda else None


def peak_host_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmd_bench(args):
    cfg = load_config(args.config, args.set)
    setup_threads(args.threads if args.threads is not None else cfg["train"]["threads"])
    device = torch.device(args.device)
    tr = Trainer(cfg, args.device, args.precision, args.compile)
    d = cfg["data"]
    it = batches(training_clips(cfg, device, args.warmup + args.steps), d["batch_size"],
                 int(cfg["train"]["seed"]), device)
    times = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "data": 0.0}
    memory = DriverMemory(device)
    t_compile = time.perf_counter()
    step = tr.predict if args.eval else tr.step
    for _ in range(args.warmup):
        step(next(it))
        memory.sample()
    warm_s = time.perf_counter() - t_compile
    for _ in range(args.steps):
        t = time.perf_counter()
        clips = next(it)
        times["data"] += time.perf_counter() - t
        loss = step(clips, times)
        memory.sample()
    loss = float(loss.detach())
    n = args.steps
    step_s = sum(times.values()) / n
    report = {
        "impl": "pytorch-baseline",
        "mode": "eval" if args.eval else "train",
        "variant": args.precision + ("+compile" if args.compile else ""),
        "device": args.device,
        "precision": args.precision,
        "compiled": args.compile,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": d["batch_size"],
        "steps": n,
        "warmup": args.warmup,
        "warmup_s": warm_s,
        "data_wait_ms": times["data"] * 1e3 / n,
        "forward_ms": times["forward"] * 1e3 / n,
        "backward_ms": times["backward"] * 1e3 / n,
        "optimizer_ms": times["optimizer"] * 1e3 / n,
        "step_ms": step_s * 1e3,
        "samples_per_s": d["batch_size"] / max(step_s, 1e-12),
        "last_loss": loss,
        "peak_device_mib": memory.mib(),
        "peak_allocated_mib": peak_device_mib(device),
        "peak_host_mib": peak_host_mib(),
        "parameters": sum(p.numel() for p in tr.net.parameters()),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"baseline {report['variant']} on {args.device}: {report['step_ms']:.2f} ms/step "
              f"(forward {report['forward_ms']:.2f}, backward {report['backward_ms']:.2f}, "
              f"optimizer {report['optimizer_ms']:.2f}), {report['samples_per_s']:.2f} samples/s, "
              f"{report['threads']} thread(s), batch {report['batch']}")
    return 0


def cmd_train(args):
    """Trains for a fixed wall time (or a number of steps) and writes the weights."""
    cfg = load_config(args.config, args.set)
    setup_threads(args.threads if args.threads is not None else cfg["train"]["threads"])
    device = torch.device(args.device)
    if not cfg["data"]["dataset"]:
        raise UsageError("train needs data.dataset")
    tr = Trainer(cfg, args.device, args.precision, args.compile)
    it = batches(training_clips(cfg, device, 0), cfg["data"]["batch_size"],
                 int(cfg["train"]["seed"]), device)
    start = time.perf_counter()
    steps, last = 0, float("nan")
    losses = []
    while True:
        elapsed = time.perf_counter() - start
        if args.seconds and time.perf_counter() - T_START >= args.seconds:
            break
        if args.max_steps and steps >= args.max_steps:
            break
        loss = tr.step(next(it))
        steps += 1
        if steps % 10 == 0:
            last = float(loss.detach())
            losses.append((steps, last))
            print(f"baseline step {steps} loss {last:.5f} ({elapsed:.0f} s)", file=sys.stderr)
    seconds = time.perf_counter() - start
    wall = time.perf_counter() - T_START
    save_safetensors(reference_state_dict(tr.net, cfg["model"]), args.out)
    report = {"impl": "pytorch-baseline", "variant": args.precision +
              ("+compile" if args.compile else ""), "device": args.device, "steps": steps,
              "seconds": seconds, "wall_seconds": wall, "last_loss": float(loss.detach()) if steps else None,
              "samples": steps * cfg["data"]["batch_size"], "weights": str(args.out)}
    print(json.dumps(report) if args.json else
          f"baseline trained {steps} steps in {seconds:.1f} s; wrote {args.out}")
    return 0


# --------------------------------------------------------------------------------------------
# Self-test: the reference's golden vectors (spec §10.2)

GOLDEN = {
    # config: (model overrides, per future frame: (sum, wsum, y[0,f,0,0,0], y[1,f,0,7,9],
    #          y[0,f,0,15,3]))
    "tt-3-5-8": ({"cell": "convttlstm", "order": 3, "steps": 5, "rank": 8}, [
        (-76.054431, -1.358550, -0.148705, -0.148400, -0.149094),
        (-76.072670, -1.358997, -0.148742, -0.148434, -0.149133),
        (-76.081676, -1.359218, -0.148760, -0.148451, -0.149152)]),
    "convlstm": ({"cell": "convlstm"}, [
        (-119.272708, -2.096562, -0.232699, -0.233016, -0.233042),
        (-119.330142, -2.097545, -0.232809, -0.233128, -0.233154),
        (-119.359065, -2.098037, -0.232865, -0.233185, -0.233211)]),
    "tt-3-3-8": ({"cell": "convttlstm", "order": 3, "steps": 3, "rank": 8}, [
        (-76.029955, -1.362767, -0.148724, -0.148244, -0.149060),
        (-76.046829, -1.363339, -0.148760, -0.148271, -0.149097),
        (-76.054903, -1.363641, -0.148778, -0.148282, -0.149116)]),
}


# Spec §10.1: single cells, B = 1, Cin = 2, Ch = 4, 6×6, k = 3, steps t = 0 … 6; per step
# (ΣH, H[0,0,0,0], H[0,1,2,3], H[0,3,5,5], H[0,2,3,1], Σ cell state).
GOLDEN_CELLS = {
    "tt-cell-3-5-3": ({"cell": "convttlstm", "order": 3, "steps": 5, "rank": 3}, [
        (0.864242, -0.032929, -0.059919, 0.092182, 0.018195, 4.094759),
        (1.483095, -0.021903, -0.062339, 0.132702, 0.030265, 7.219828),
        (1.774066, 0.000920, -0.099335, 0.172099, 0.008149, 10.738599),
        (1.532968, -0.005513, -0.258261, 0.236596, 0.042334, 15.959641),
        (-1.067838, -0.056658, -0.360603, 0.270121, 0.096556, 21.888044),
        (-4.271209, -0.072512, -0.290479, 0.261066, 0.096210, 27.028447),
        (-7.374093, -0.012642, -0.401259, 0.219975, 0.178795, 28.411814)]),
    "convlstm-cell": ({"cell": "convlstm"}, [
        (-2.119059, -0.004140, 0.010742, -0.027820, -0.043161, -4.488415),
        (-3.296389, -0.017922, 0.012299, -0.036940, -0.058521, -7.003754),
        (-3.883723, -0.032721, -0.000104, -0.031303, -0.051824, -8.265069),
        (-4.112405, -0.039421, -0.020902, -0.020896, -0.036958, -8.755300),
        (-4.160024, -0.033620, -0.037120, -0.016122, -0.029536, -8.857485),
        (-4.167912, -0.019714, -0.038449, -0.021469, -0.037358, -8.874482),
        (-4.218887, -0.009017, -0.024632, -0.033576, -0.055292, -8.981975)]),
}


def golden_fill(net, m):
    """Spec §10: tensor ti of the state_dict (code/ layout) gets s·sin(0.37 j + 0.11 ti + 0.5)."""
    with torch.no_grad():
        for ti, (name, p) in enumerate(net.state_dict().items()):
            shape = list(p.shape)
            five = is_preprocess_weight(name)
            if five:
                s_len = m["steps"] - m["order"] + 1
                shape = [shape[0], shape[1] // s_len, shape[2], shape[3], s_len]
            numel = math.prod(shape)
            s = 1.5 / math.sqrt(numel / shape[0]) if name.endswith("weight") else 0.1
            j = torch.arange(numel, dtype=torch.float64)
            v = (s * torch.sin(0.37 * j + 0.11 * ti + 0.5)).float().reshape(shape)
            if five:
                v = v.permute(0, 4, 1, 2, 3).reshape(p.shape)
            p.copy_(v)


def golden_input(b, t, c, h, w):
    bb, tt, cc, hh, ww = torch.meshgrid(*[torch.arange(n, dtype=torch.float64)
                                          for n in (b, t, c, h, w)], indexing="ij")
    return (0.5 + 0.5 * torch.sin(0.7 * hh + 1.3 * ww + 0.9 * tt + 2.1 * bb + 0.4 * cc)).float()


def cmd_selftest(args):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    failures = []
    for name, (over, rows) in GOLDEN_CELLS.items():
        m = dict(DEFAULTS["model"], **over)
        if m["cell"] == "convttlstm":
            cell = ConvTTLSTMCell(2, 4, m["order"], m["steps"], m["rank"], 3)
        else:
            cell = ConvLSTMCell(2, 4, 3)
        golden_fill(cell, m)
        xs = golden_input(1, 7, 2, 6, 6)
        worst = 0.0
        with torch.no_grad():
            state = cell.initial(xs[:, 0])
            for t, want in enumerate(rows):
                h, state = cell(xs[:, t], state)
                c = state[-1]
                got = (float(h.sum()), float(h[0, 0, 0, 0]), float(h[0, 1, 2, 3]),
                       float(h[0, 3, 5, 5]), float(h[0, 2, 3, 1]), float(c.sum()))
                for g, w in zip(got, want):
                    worst = max(worst, abs(g - w) / (abs(w) + 0.1))
        ok = worst <= 2e-5
        print(f"golden {name}: worst relative difference {worst:.2e} "
              f"({'ok' if ok else 'FAILED'})")
        if not ok:
            failures.append(name)
    x = golden_input(2, 10, 1, 16, 16)
    wcos = torch.cos(0.05 * torch.arange(2 * 16 * 16, dtype=torch.float64))
    for name, (over, frames) in GOLDEN.items():
        m = dict(DEFAULTS["model"], **over)
        net = Network(m)
        golden_fill(net, m)
        with torch.no_grad():
            y = net(x, 10, 3)[:, 9:].double()  # predictions of frames 10, 11, 12
        worst = 0.0
        for f, want in enumerate(frames):
            yf = y[:, f]
            got = (float(yf.sum()), float((yf.reshape(-1) * wcos).sum()),
                   float(yf[0, 0, 0, 0]), float(yf[1, 0, 7, 9]), float(yf[0, 0, 15, 3]))
            for g, w in zip(got, want):
                worst = max(worst, abs(g - w) / max(abs(w), 1e-3))
        ok = worst <= 2e-5
        print(f"golden {name}: worst relative difference {worst:.2e} "
              f"({'ok' if ok else 'FAILED'})")
        if not ok:
            failures.append(name)
    return 1 if failures else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("selftest", help="reproduce the reference's golden vectors (spec §10.2)")
    for name in ("bench", "train"):
        s = sub.add_parser(name)
        s.add_argument("--config", required=True)
        s.add_argument("--set", action="append", default=[], metavar="K=V")
        s.add_argument("--device", default="cpu")
        s.add_argument("--precision", choices=["f32", "tf32", "bf16"], default="f32")
        s.add_argument("--compile", action="store_true", help="torch.compile the network")
        s.add_argument("--threads", type=int, default=None)
        s.add_argument("--json", action="store_true")
        if name == "bench":
            s.add_argument("--eval", action="store_true",
                           help="inference rollouts (I in, F predicted, no gradients)")
            s.add_argument("--steps", type=int, default=10)
            s.add_argument("--warmup", type=int, default=2)
        else:
            s.add_argument("--seconds", type=float, default=0.0,
                           help="stop this many seconds after the process started")
            s.add_argument("--max-steps", type=int, default=0)
            s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        if args.command != "selftest" and args.device.startswith("cuda") \
                and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: torch sees no CUDA device")
        return {"selftest": cmd_selftest, "bench": cmd_bench, "train": cmd_train}[
            args.command](args)
    except UsageError as e:
        print(f"baseline: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
