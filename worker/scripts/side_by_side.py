#!/usr/bin/env python3
"""convtt and the PyTorch baseline, measured side by side, alternately, on the same device.

    side_by_side.py --bin target/release --config configs/tiny-cpu.toml [--set k=v ...]
                    [--device cpu|cuda] [--rounds 3] [--steps 5] [--warmup 1]
                    [--variant f32 --variant bf16 ...] [--compile] [--threads N]
                    [--python PY] [--json FILE] [--markdown FILE]

Every round runs `convtt-worker bench --json` and then `baseline.py bench --json` for each
variant (the order flips every round, so drift on a shared machine hits both alike), and
reports per-round ratios and the medians. Both sides read the same config: convtt resolves it
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


def run_json(cmd, env, timeout):
    """Runs `cmd`, returns the JSON object on its stdout's last line."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(map(str, cmd))}: did not finish within {timeout:.0f} s")
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-8:]
        raise Failure(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n  " + "\n  ".join(tail))
    return parse_json(p.stdout, cmd)


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


def convtt_bench(bin_dir, config, sets, device, steps, warmup, env, timeout):
    cmd = [str(bin_dir / "convtt-worker"), "bench", "--config", str(config), "--json",
           "--device", device.split(":")[0], "--steps", str(steps), "--warmup", str(warmup)]
    for s in sets:
        cmd += ["--set", s]
    r = run_json(cmd, env, timeout)
    r["impl"] = "convtt"
    return r


def baseline_bench(python, resolved, device, precision, compile_, steps, warmup, threads,
                   env, timeout):
    cmd = [python, str(HERE / "baseline.py"), "bench", "--config", str(resolved), "--json",
           "--device", device, "--precision", precision, "--steps", str(steps),
           "--warmup", str(warmup)]
    if compile_:
        cmd.append("--compile")
    if threads is not None:
        cmd += ["--threads", str(threads)]
    return run_json(cmd, env, timeout)


def compare(bin_dir, config, sets, device="cpu", rounds=3, steps=5, warmup=1,
            variants=("f32",), compile_variants=(), threads=None, python="python3", env=None,
            timeout=1800, log=print, compile_timeout=None):
    """Runs the rounds; returns {"rows": [...], "runs": [...]} with medians and ratios.
    `compile_variants`: the variants whose baseline also runs under torch.compile."""
    env = dict(env or os.environ)
    bin_dir = pathlib.Path(bin_dir)
    base_sets = list(sets)
    if threads is not None:
        base_sets.append(f"train.threads={threads}")
    results, failures = [], []
    compile_timeout = min(timeout, compile_timeout or timeout)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for v in variants:
                ours, theirs = VARIANTS[v]
                vsets = base_sets + ours
                resolved = resolve_config(bin_dir, config, vsets, env, tmp)
                jobs = [("convtt", v, False)]
                if theirs:
                    jobs.append(("baseline", theirs, False))
                    if v in compile_variants:
                        jobs.append(("baseline", theirs, True))
                if r % 2 == 1:
                    jobs.reverse()
                for impl, prec, comp in jobs:
                    if impl == "convtt":
                        rep = convtt_bench(bin_dir, config, vsets, device, steps, warmup, env,
                                           timeout)
                    elif comp:
                        # torch.compile may fail or take longer than its share: record that
                        # and keep the eager figures.
                        try:
                            rep = baseline_bench(python, resolved, device, prec, True, steps,
                                                 warmup, threads, env, compile_timeout)
                        except Failure as e:
                            failures.append(f"round {r + 1} {v} torch.compile: {e}")
                            log(f"round {r + 1}/{rounds} {v:>4} baseline +compile: {e}")
                            continue
                    else:
                        rep = baseline_bench(python, resolved, device, prec, False, steps,
                                             warmup, threads, env, timeout)
                    rep.update(round=r, variant=v, compiled=comp)
                    results.append(rep)
                    log(f"round {r + 1}/{rounds} {v:>4} {impl}{' +compile' if comp else ''}: "
                        f"{rep['step_ms']:.1f} ms/step, {rep['samples_per_s']:.3f} samples/s")
    summary = summarize(results, rounds, variants)
    summary["failures"] = failures
    return summary


def summarize(results, rounds, variants):
    rows = []
    for v in variants:
        ours = [x for x in results if x["variant"] == v and x["impl"] == "convtt"]
        for comp in (False, True):
            theirs = [x for x in results if x["variant"] == v and x["impl"] != "convtt"
                      and x["compiled"] == comp]
            if not theirs and comp:
                continue
            ratios = []
            for r in range(rounds):
                a = [x for x in ours if x["round"] == r]
                b = [x for x in theirs if x["round"] == r]
                if a and b:
                    ratios.append(a[0]["samples_per_s"] / max(b[0]["samples_per_s"], 1e-12))
            row = {
                "variant": v,
                "baseline": ("torch.compile" if comp else "eager") if theirs else None,
                "convtt_step_ms": statistics.median(x["step_ms"] for x in ours),
                "convtt_samples_per_s": statistics.median(x["samples_per_s"] for x in ours),
                "ratios": ratios,
                "median_ratio": statistics.median(ratios) if ratios else None,
            }
            if theirs:
                row["baseline_step_ms"] = statistics.median(x["step_ms"] for x in theirs)
                row["baseline_samples_per_s"] = statistics.median(
                    x["samples_per_s"] for x in theirs)
                row["baseline_warmup_s"] = statistics.median(x["warmup_s"] for x in theirs)
            peaks = [x.get("peak_device_mib") for x in ours if x.get("peak_device_mib")]
            row["convtt_peak_device_mib"] = max(peaks) if peaks else None
            peaks = [x.get("peak_device_mib") for x in theirs if x.get("peak_device_mib")]
            row["baseline_peak_device_mib"] = max(peaks) if peaks else None
            rows.append(row)
    return {"rows": rows, "runs": results}


def markdown(summary, title):
    out = [f"**{title}**", "",
           "| variant | baseline | convtt ms/step | baseline ms/step | convtt samples/s | "
           "baseline samples/s | ratio per round | median ratio |",
           "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        fmt = lambda v, p=1: "—" if v is None else f"{v:.{p}f}"
        out.append(
            f"| {r['variant']} | {r['baseline'] or '—'} | {fmt(r['convtt_step_ms'])} | "
            f"{fmt(r.get('baseline_step_ms'))} | {fmt(r['convtt_samples_per_s'], 3)} | "
            f"{fmt(r.get('baseline_samples_per_s'), 3)} | "
            f"{', '.join(f'{x:.2f}×' for x in r['ratios']) or '—'} | "
            f"{'—' if r['median_ratio'] is None else format(r['median_ratio'], '.2f') + '×'} |")
    out.append("")
    out.append("ratio = convtt samples/s ÷ baseline samples/s (> 1: convtt is faster)")
    for f in summary.get("failures", []):
        out.append(f"- {f}")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default="target/release", help="directory of the convtt binaries")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--python", default=os.environ.get("CONVTT_PYTHON", sys.executable),
                   help="the python that runs the baseline (default: this one)")
    p.add_argument("--json", help="write the runs and the summary here")
    p.add_argument("--markdown", help="write the Markdown table here")
    args = p.parse_args(argv)
    try:
        variants = args.variant or ["f32"]
        summary = compare(args.bin, args.config, args.set, args.device, args.rounds,
                          args.steps, args.warmup, variants, variants if args.compile else [],
                          args.threads, args.python, log=lambda s: print(s, file=sys.stderr))
    except Failure as e:
        print(f"side_by_side: {e}", file=sys.stderr)
        return 1
    title = f"{args.config} on {args.device}" + (f", {args.threads} thread(s)"
                                                  if args.threads else "")
    table = markdown(summary, title)
    print(table)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
