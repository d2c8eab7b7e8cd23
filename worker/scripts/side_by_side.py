#!/usr/bin/env python3
"""convtt and the PyTorch baseline, measured side by side, alternately, on the same device.

    side_by_side.py --bin target/release --config configs/tiny-cpu.toml [--set k=v ...]
                    [--device cpu|cuda] [--rounds 3] [--steps 5] [--warmup 1]
                    [--variant f32 --variant bf16 ...] [--compile] [--threads N]
                    [--eval] [--launcher-workers N]
                    [--python PY] [--json FILE] [--markdown FILE]
    side_by_side.py --suite cpu [--rounds 3] [--markdown FILE]

Every round runs `convtt-worker bench --json` and then `baseline.py bench --json` for each
variant (the order flips every round, so drift on a shared machine hits both alike), and
reports per-round ratios and the medians. `--eval` adds inference (the evaluation rollout, no
gradients: clips predicted per second) for both. `--launcher-workers N` adds convtt the way it
is meant to run on a CPU node: `convtt-launch --cpu-workers N` training the same global batch
(each worker pinned, one intra-op thread per core), its samples/s read from the run's
`metrics.jsonl` (a first window of `--steps` steps is the warm-up), against the same round's
single-process baseline. `--suite cpu` is the CPU table of docs/benchmarks.md in one command:
the paper network (32×32, batch 2) and the tiny config, training, inference and 2 launcher
workers, all cores (test data made with `convtt-data` when missing). Both sides read the same config: convtt resolves it
(`convtt-launch check`, defaults and overrides applied) and the baseline reads that resolved
file, so the model, data, batch, optimizer and threads are the same.

Variants: `f32` (TF32 off), `tf32` (TF32 convolutions), `bf16` (bf16 convolutions /
autocast), `fp16` (convtt only: fp16 with dynamic loss scaling, CUDA only). `--compile` adds the baseline's torch.compile run of each
variant (convtt has no compile step; its row is reused).

Only the standard library is needed here; the baseline needs torch (+ h5py for data).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import tomllib

HERE = pathlib.Path(__file__).resolve().parent

# convtt's `--set` for each variant, and the baseline's --precision.
VARIANTS = {
    "f32": (["train.precision=\"f32\"", "train.tf32=false"], "f32"),
    "tf32": (["train.precision=\"f32\"", "train.tf32=true"], "tf32"),
    "bf16": (["train.precision=\"bf16\""], "bf16"),
    "fp16": (["train.precision=\"fp16\""], None),
}


class Failure(Exception):
    """A command failed: the message quotes it and its output's tail."""


def run_checked(cmd, env, timeout):
    """Runs `cmd`; a timeout or a non-zero exit is a Failure quoting its output's tail."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(map(str, cmd))}: did not finish within {timeout:.0f} s")
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-8:]
        raise Failure(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n  " + "\n  ".join(tail))
    return p


def run_json(cmd, env, timeout):
    """Runs `cmd`, returns the JSON object on its stdout's last line."""
    return parse_json(run_checked(cmd, env, timeout).stdout, cmd)


def parse_json(stdout, cmd):
    """The whole of stdout as JSON (convtt prints it pretty), else its last line."""
    for text in (stdout, (stdout.strip().splitlines() or [""])[-1]):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    raise Failure(f"{' '.join(map(str, cmd))}: no JSON on stdout:\n{stdout[-2000:]}")


def resolve_config(bin_dir, config, sets, env, out_dir):
    """`convtt-launch check` → the resolved TOML (every default and override written out)."""
    cmd = [str(bin_dir / "convtt-launch"), "check", "--config", str(config)]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr.strip()}")
    path = pathlib.Path(out_dir) / "resolved.toml"
    path.write_text(p.stdout)
    return path


def convtt_bench(bin_dir, config, sets, device, steps, warmup, env, timeout, eval_=False):
    cmd = [str(bin_dir / "convtt-worker"), "bench", "--config", str(config), "--json",
           "--device", device.split(":")[0], "--steps", str(steps), "--warmup", str(warmup)]
    if eval_:
        cmd.append("--eval")
    for s in sets:
        cmd += ["--set", s]
    r = run_json(cmd, env, timeout)
    r["impl"] = "convtt"
    return r


def convtt_launch(bin_dir, config, sets, workers, steps, batch, env, timeout, run_dir):
    """`convtt-launch --cpu-workers N` for 2 × `steps` steps, logging every `steps`: the second
    window's samples/s (all workers) from metrics.jsonl; the first window is the warm-up."""
    cmd = [str(bin_dir / "convtt-launch"), "--cpu-workers", str(workers), "--config",
           str(config), "--run-dir", str(run_dir), "--quiet-workers"]
    for s in list(sets) + [f"train.max_steps={2 * steps}", f"train.log_every={steps}",
                           "train.valid_every=0", "train.tensorboard=false",
                           "checkpoint.every_steps=0", "train.epochs=1000000"]:
        cmd += ["--set", s]
    run_checked(cmd, env, timeout)
    records = [json.loads(line) for line in
               (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if r.get("kind") == "train" and r["step"] == 2 * steps]
    if not train:
        raise Failure(f"{run_dir}/metrics.jsonl: no train record at step {2 * steps}")
    sps = train[-1]["samples_per_s"]
    return {"impl": "convtt", "workers": workers, "samples_per_s": sps,
            "step_ms": 1e3 * batch / sps}


def baseline_bench(python, resolved, device, precision, compile_, steps, warmup, threads,
                   env, timeout, eval_=False):
    cmd = [python, str(HERE / "baseline.py"), "bench", "--config", str(resolved), "--json",
           "--device", device, "--precision", precision, "--steps", str(steps),
           "--warmup", str(warmup)]
    if eval_:
        cmd.append("--eval")
    if compile_:
        cmd.append("--compile")
    if threads is not None:
        cmd += ["--threads", str(threads)]
    return run_json(cmd, env, timeout)


def compare(bin_dir, config, sets, device="cpu", rounds=3, steps=5, warmup=1,
            variants=("f32",), compile_variants=(), threads=None, python="python3", env=None,
            timeout=1800, log=print, compile_timeout=None, modes=("train",),
            launcher_workers=0):
    """Runs the rounds; returns {"rows": [...], "runs": [...]} with medians and ratios.
    `compile_variants`: the variants whose baseline also runs under torch.compile. `modes`:
    `train` and/or `eval` (inference). `launcher_workers` > 0 adds convtt trained through
    `convtt-launch --cpu-workers N` (compared with the same round's baseline `train`)."""
    env = dict(env or os.environ)
    bin_dir = pathlib.Path(bin_dir)
    base_sets = list(sets)
    if threads is not None:
        base_sets.append(f"train.threads={threads}")
    if launcher_workers and "train" not in modes:
        modes = ("train",) + tuple(modes)
    results, failures = [], []
    compile_timeout = min(timeout, compile_timeout or timeout)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for v in variants:
                ours, theirs = VARIANTS[v]
                vsets = base_sets + ours
                resolved = resolve_config(bin_dir, config, vsets, env, tmp)
                jobs = []
                for mode in modes:
                    jobs.append(("convtt", v, False, mode))
                    if theirs:
                        jobs.append(("baseline", theirs, False, mode))
                        if v in compile_variants:
                            jobs.append(("baseline", theirs, True, mode))
                if launcher_workers:
                    jobs.append(("launcher", v, False, "train"))
                if r % 2 == 1:
                    jobs.reverse()
                for impl, prec, comp, mode in jobs:
                    ev = mode == "eval"
                    if impl == "convtt":
                        rep = convtt_bench(bin_dir, config, vsets, device, steps, warmup, env,
                                           timeout, ev)
                    elif impl == "launcher":
                        # Pinned workers pick their own thread counts: no train.threads.
                        lsets = list(sets) + ours
                        with open(resolved, "rb") as f:
                            batch = tomllib.load(f)["data"]["batch_size"]
                        rep = convtt_launch(bin_dir, config, lsets, launcher_workers, steps,
                                            batch, env, timeout,
                                            pathlib.Path(tmp) / f"launch-{r}-{v}")
                    elif comp:
                        # torch.compile may fail or take longer than its share: record that
                        # and keep the eager figures.
                        try:
                            rep = baseline_bench(python, resolved, device, prec, True, steps,
                                                 warmup, threads, env, compile_timeout, ev)
                        except Failure as e:
                            failures.append(f"round {r + 1} {v} {mode} torch.compile: {e}")
                            log(f"round {r + 1}/{rounds} {v:>4} {mode} baseline +compile: {e}")
                            continue
                    else:
                        rep = baseline_bench(python, resolved, device, prec, False, steps,
                                             warmup, threads, env, timeout, ev)
                    rep.update(round=r, variant=v, compiled=comp,
                               mode=f"launcher ×{launcher_workers}" if impl == "launcher"
                               else mode)
                    results.append(rep)
                    log(f"round {r + 1}/{rounds} {v:>4} {rep['mode']} {impl}"
                        f"{' +compile' if comp else ''}: {rep['step_ms']:.1f} ms/step, "
                        f"{rep['samples_per_s']:.3f} samples/s")
    summary = summarize(results, rounds, variants)
    summary["failures"] = failures
    return summary


def summarize(results, rounds, variants):
    rows = []
    modes = list(dict.fromkeys(x["mode"] for x in results))
    for v in variants:
        for mode in modes:
            ours = [x for x in results if x["variant"] == v and x["impl"] == "convtt"
                    and x["mode"] == mode]
            if not ours:
                continue
            # A launcher run is compared with the baseline's training in one process.
            against = "train" if mode.startswith("launcher") else mode
            for comp in (False, True):
                theirs = [x for x in results if x["variant"] == v and x["impl"] != "convtt"
                          and x["compiled"] == comp and x["mode"] == against]
                if not theirs and comp:
                    continue
                rows.append(summary_row(v, mode, comp, ours, theirs, rounds))
    return {"rows": rows, "runs": results}


def summary_row(variant, mode, compiled, ours, theirs, rounds):
    ratios = []
    for r in range(rounds):
        a = [x for x in ours if x["round"] == r]
        b = [x for x in theirs if x["round"] == r]
        if a and b:
            ratios.append(a[0]["samples_per_s"] / max(b[0]["samples_per_s"], 1e-12))
    row = {
        "variant": variant,
        "mode": mode,
        "baseline": ("torch.compile" if compiled else "eager") if theirs else None,
        "convtt_step_ms": statistics.median(x["step_ms"] for x in ours),
        "convtt_samples_per_s": statistics.median(x["samples_per_s"] for x in ours),
        "ratios": ratios,
        "median_ratio": statistics.median(ratios) if ratios else None,
    }
    if theirs:
        row["baseline_step_ms"] = statistics.median(x["step_ms"] for x in theirs)
        row["baseline_samples_per_s"] = statistics.median(x["samples_per_s"] for x in theirs)
        row["baseline_warmup_s"] = statistics.median(x["warmup_s"] for x in theirs)
    peaks = [x.get("peak_device_mib") for x in ours if x.get("peak_device_mib")]
    row["convtt_peak_device_mib"] = max(peaks) if peaks else None
    peaks = [x.get("peak_device_mib") for x in theirs if x.get("peak_device_mib")]
    row["baseline_peak_device_mib"] = max(peaks) if peaks else None
    return row


def markdown(summary, title, label=None):
    """The table; `label` (e.g. the network) fills a first column when given."""
    first = "| network " if label else ""
    out = [f"**{title}**", "",
           f"{first}| variant | mode | baseline | convtt ms/step | baseline ms/step | "
           "convtt samples/s | baseline samples/s | ratio per round | median ratio |",
           "|---" * (9 + bool(label)) + "|"]
    out += table_rows(summary, label)
    out.append("")
    out.append("ratio = convtt samples/s ÷ baseline samples/s (> 1: convtt is faster); "
               "samples/s are training clips per second (train, launcher) or clips predicted "
               "per second (eval); a launcher row is compared with the baseline's training in "
               "one process using all the cores")
    for f in summary.get("failures", []):
        out.append(f"- {f}")
    return "\n".join(out) + "\n"


def table_rows(summary, label=None):
    out = []
    for r in summary["rows"]:
        fmt = lambda v, p=1: "—" if v is None else f"{v:.{p}f}"
        out.append(
            (f"| {label} " if label else "") +
            f"| {r['variant']} | {r.get('mode', 'train')} | {r['baseline'] or '—'} | "
            f"{fmt(r['convtt_step_ms'])} | "
            f"{fmt(r.get('baseline_step_ms'))} | {fmt(r['convtt_samples_per_s'], 3)} | "
            f"{fmt(r.get('baseline_samples_per_s'), 3)} | "
            f"{', '.join(f'{x:.2f}×' for x in r['ratios']) or '—'} | "
            f"{'—' if r['median_ratio'] is None else format(r['median_ratio'], '.2f') + '×'} |")
    return out


# `--suite cpu`: (label, config, --set, (dataset name, frames, size), steps per measurement).
SUITES = {
    "cpu": [
        ("paper network (12 layers 32/48/48/32, k = 5, 2.69M params), 32×32, batch 2, 10 → 10",
         "configs/mmnist.toml",
         ["data.height=32", "data.width=32", "data.batch_size=2", "launch.gpus=0"],
         ("mm32x20", 20, 32), 3),
        ("tiny-cpu (19k params), 64×64, batch 4, 5 → 5", "configs/tiny-cpu.toml", [],
         ("tiny64x10", 10, 64), 5),
    ],
}


def suite_data(bin_dir, name, frames, size, env):
    """A small generated Moving-MNIST set in target/bench-data (made once)."""
    out = pathlib.Path("target/bench-data") / name
    if not (out / "dataset.toml").exists():
        cmd = [str(pathlib.Path(bin_dir) / "convtt-data"), "moving-mnist", "--out", str(out),
               "--train", "64", "--valid", "8", "--test", "8", "--frames", str(frames),
               "--size", str(size), "--seed", "1", "--force"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise Failure(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr.strip()}")
    return out


def run_suite(args):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = dict(os.environ)
    parts, summaries = [], {}
    for label, config, sets, (name, frames, size), steps in SUITES[args.suite]:
        data = suite_data(args.bin, name, frames, size, env)
        print(f"== {label}", file=sys.stderr)
        summary = compare(args.bin, config, sets + [f"data.dataset={data}"], "cpu",
                          args.rounds, steps, 1, ["f32"], [], cores, args.python, env,
                          log=lambda s: print(s, file=sys.stderr), modes=("train", "eval"),
                          launcher_workers=cores)
        summaries[label] = summary
        parts.append((label, summary))
    title = (f"convtt and the PyTorch baseline on CPU ({cores} cores, f32, {args.rounds} "
             f"rounds, medians)")
    head = markdown({"rows": []}, title, label=True).split("\n")[:4]
    rows = [r for label, summary in parts for r in table_rows(summary, label)]
    foot = markdown({"rows": [], "failures": [f for _, s in parts for f in s["failures"]]},
                    title).split("\n")[4:]
    table = "\n".join(head + rows + foot)
    return table, summaries


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default="target/release", help="directory of the convtt binaries")
    p.add_argument("--config")
    p.add_argument("--suite", choices=sorted(SUITES),
                   help="run a predefined table instead of one --config")
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval", action="store_true", help="add inference rows")
    p.add_argument("--launcher-workers", type=int, default=0, metavar="N",
                   help="add convtt trained through convtt-launch --cpu-workers N")
    p.add_argument("--python", default=os.environ.get("CONVTT_PYTHON", sys.executable),
                   help="the python that runs the baseline (default: this one)")
    p.add_argument("--json", help="write the runs and the summary here")
    p.add_argument("--markdown", help="write the Markdown table here")
    args = p.parse_args(argv)
    if not args.config and not args.suite:
        p.error("give --config or --suite")
    try:
        if args.suite:
            table, summary = run_suite(args)
        else:
            variants = args.variant or ["f32"]
            summary = compare(args.bin, args.config, args.set, args.device, args.rounds,
                              args.steps, args.warmup, variants,
                              variants if args.compile else [], args.threads, args.python,
                              log=lambda s: print(s, file=sys.stderr),
                              modes=("train", "eval") if args.eval else ("train",),
                              launcher_workers=args.launcher_workers)
            title = f"{args.config} on {args.device}" + (f", {args.threads} thread(s)"
                                                          if args.threads else "")
            table = markdown(summary, title)
    except Failure as e:
        print(f"side_by_side: {e}", file=sys.stderr)
        return 1
    print(table)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
