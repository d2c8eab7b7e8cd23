#!/usr/bin/env python3
"""Random kill -9 trials against the real binaries: how much work a dead worker costs.

Each trial starts a CPU training run (two workers on one node, or `mpirun -n 2` launchers of two
workers each), waits a random time, SIGKILLs one random worker of the run from outside, and
checks what a user cares about: the run finished (exit 0), how it recovered (peer recovery or a
checkpoint restart), how many steps were trained twice (the work lost), whether the final
parameters are bitwise those of an uninterrupted run, and that no process of the run is left.

    python3 tests/recovery_trials.py --trials 10                 # both layouts, 10 trials each
    python3 tests/recovery_trials.py --layout single --trials 3 --recovery checkpoint
    python3 tests/recovery_trials.py --bench --config configs/mmnist.toml --frames 20 --size 32 \
        --steps 8 --checkpoint-every 4 --kill-at 6 --set data.batch_size=2

`--bench` instead measures recovery cost with an injected kill at a fixed step (CONVTT_FAULT):
wall time of the run with the kill minus the same run without, for peer recovery and for the
checkpoint restart. Binaries: the newer of target/release and target/debug (`--bin-dir`).
Needs the repository's setup (.ci/setup.sh); writes only under a temporary directory.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bin_dir(arg):
    if arg:
        return Path(arg)
    built = [ROOT / "target" / p for p in ("release", "debug")]
    built = [d for d in built if (d / "convtt-launch").exists() and (d / "convtt-worker").exists()]
    if not built:
        sys.exit("no built binaries: run `cargo build --release --workspace --bins` first")
    # The most recently built profile (a stale release build must not stand in for today's).
    return max(built, key=lambda d: (d / "convtt-launch").stat().st_mtime)


def make_dataset(bins, out, frames, size):
    subprocess.run(
        [str(bins / "convtt-data"), "moving-mnist", "--train", "32", "--valid", "4", "--test", "4",
         "--frames", str(frames), "--size", str(size), "--seed", "3", "--shard-clips", "8",
         "--out", str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def launch_cmd(bins, layout, config, run_dir, sets):
    base = [str(bins / "convtt-launch"), "--quiet-workers", "--config", str(config),
            "--run-dir", str(run_dir), "--cpu-workers", "2"]
    for s in sets:
        base += ["--set", s]
    if layout == "mpi":
        return ["mpirun", "-n", "2", "--bind-to", "none", "--oversubscribe"] + base
    return base


def env_for(fault=None):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("CONVTT_FAULT", None)
    if fault:
        env["CONVTT_FAULT"] = fault
    return env


def workers_of(run_dir):
    """Pids of live convtt-worker processes of this run (by CONVTT_RUN_DIR)."""
    want = f"CONVTT_RUN_DIR={run_dir}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            env = (p / "environ").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"convtt-worker" in cmd and want in env and state != "Z":
            found.append(int(p.name))
    return found


def leftovers(run_dir):
    needle = str(run_dir).encode()
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if needle in (p / "cmdline").read_bytes():
                    n += 1
            except OSError:
                pass
    return n


def records(run_dir, kind):
    out = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("kind") == kind:
                out.append(r)
    return out


def weights(bins, config, run_dir, sets):
    out = run_dir / "final.safetensors"
    cmd = [str(bins / "convtt-worker"), "export", "--config", str(config), "--run-dir",
           str(run_dir), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out.read_bytes()


def timed_run(cmd, env):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return p.returncode, p.stderr, time.monotonic() - t0


def trial(bins, layout, config, work, sets, ref_weights, ref_secs, k, rng):
    run_dir = work / f"{layout}-{k}"
    proc = subprocess.Popen(launch_cmd(bins, layout, config, run_dir, sets), env=env_for(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    delay = rng.uniform(0.1, 0.7) * ref_secs
    victim = None
    while proc.poll() is None and time.monotonic() - t0 < delay:
        time.sleep(0.05)
    pids = workers_of(run_dir)
    if proc.poll() is None and pids:
        victim = rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic() - t0
    _, stderr = proc.communicate()
    secs = time.monotonic() - t0
    steps = [r["step"] for r in records(run_dir, "train")]
    peer = records(run_dir, "recovery")
    restarted = "resuming from the newest valid checkpoint" in stderr
    row = {
        "trial": k, "layout": layout, "exit": proc.returncode,
        "killed_at_s": round(killed_at, 2), "victim": victim is not None,
        "mode": "peer" if peer else ("checkpoint" if restarted else "none"),
        "steps_lost": len(steps) - len(set(steps)),
        "recovery_s": round(peer[0]["seconds"], 2) if peer else None,
        "overhead_s": round(secs - ref_secs, 1),
        "bitwise_equal": proc.returncode == 0 and weights(bins, config, run_dir, sets) == ref_weights,
        "leftover_processes": leftovers(run_dir),
    }
    if proc.returncode != 0:
        row["stderr_tail"] = stderr.strip().splitlines()[-5:]
    if restarted:
        # Why peer recovery was not used (or failed): the launcher's lines saying so.
        keys = ("peer recovery", "disagree", "cannot take part", "failed with", "while rank")
        row["why"] = [l[l.find("Z ") + 2:][:300] for l in stderr.splitlines()
                      if any(k in l for k in keys)][:4]
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


def trials(args, bins, work, config, sets):
    rng = random.Random(args.seed)
    all_rows = []
    layouts = ["single", "mpi"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        ref = work / f"{layout}-reference"
        code, err, ref_secs = timed_run(launch_cmd(bins, layout, config, ref, sets), env_for())
        if code != 0:
            sys.exit(f"the uninterrupted {layout} run failed ({code}):\n{err}")
        ref_weights = weights(bins, config, ref, sets)
        print(f"{layout}: uninterrupted run {ref_secs:.1f} s", flush=True)
        for k in range(args.trials):
            row = trial(bins, layout, config, work, sets, ref_weights, ref_secs, k, rng)
            all_rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    for layout in layouts:
        rows = [r for r in all_rows if r["layout"] == layout and r["victim"]]
        if not rows:
            continue
        rec = [r["recovery_s"] for r in rows if r["recovery_s"] is not None]
        print(f"{layout}: {len(rows)} kills · finished {sum(r['exit'] == 0 for r in rows)} · "
              f"peer {sum(r['mode'] == 'peer' for r in rows)} · "
              f"checkpoint {sum(r['mode'] == 'checkpoint' for r in rows)} · "
              f"steps lost {sum(r['steps_lost'] for r in rows)} "
              f"(max {max(r['steps_lost'] for r in rows)}) · "
              f"bitwise equal {sum(r['bitwise_equal'] for r in rows)}/{len(rows)} · "
              f"leftover processes {sum(r['leftover_processes'] for r in rows)} · "
              f"peer recovery median {statistics.median(rec) if rec else float('nan'):.2f} s")
    bad = [r for r in all_rows if r["victim"] and (r["exit"] != 0 or r["leftover_processes"])]
    return 1 if bad else 0


def bench(args, bins, work, config, sets):
    """Wall time with an injected kill minus without, peer recovery vs checkpoint restart."""
    layout = "single"
    kill_at = args.kill_at or max(1, args.steps * 2 // 3)
    ref = work / "bench-reference"
    code, err, ref_secs = timed_run(launch_cmd(bins, layout, config, ref, sets), env_for())
    if code != 0:
        sys.exit(f"the uninterrupted run failed ({code}):\n{err}")
    print(f"uninterrupted: {ref_secs:.1f} s ({args.steps} steps, checkpoint every "
          f"{args.checkpoint_every}, rank 1 killed after step {kill_at})")
    for mode in ("peer", "checkpoint"):
        run_dir = work / f"bench-{mode}"
        s = sets + [f'launch.recovery="{mode}"']
        code, err, secs = timed_run(launch_cmd(bins, layout, config, run_dir, s),
                                    env_for(f"kill:rank=1:step={kill_at}"))
        steps = [r["step"] for r in records(run_dir, "train")]
        peer = records(run_dir, "recovery")
        detail = f", death to resume {peer[0]['seconds']:.2f} s" if peer else ""
        print(f"{mode}: exit {code}, {secs:.1f} s, overhead {secs - ref_secs:+.1f} s, "
              f"steps trained twice {len(steps) - len(set(steps))}{detail}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--layout", choices=["single", "mpi", "both"], default="both")
    ap.add_argument("--config", default=str(ROOT / "configs/tiny-cpu.toml"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--size", type=int, default=64, help="frame height and width")
    ap.add_argument("--frames", type=int, default=10,
                    help="frames per generated clip (input + future frames of the config)")
    ap.add_argument("--checkpoint-every", type=int, default=8)
    ap.add_argument("--recovery", choices=["peer", "checkpoint"], default="peer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin-dir")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--kill-at", type=int, default=0,
                    help="--bench: steps done when rank 1 dies (default: two thirds of --steps)")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    bins = bin_dir(args.bin_dir)
    with tempfile.TemporaryDirectory(prefix="convtt-trials-") as tmp:
        work = Path(tmp)
        data = work / "data"
        make_dataset(bins, data, args.frames, args.size)
        sets = [f"data.dataset={data}", f"train.max_steps={args.steps}", "train.epochs=1000",
                "train.log_every=1", f"checkpoint.every_steps={args.checkpoint_every}",
                "checkpoint.keep_last=3", "launch.restart_delay_secs=0",
                f'launch.recovery="{args.recovery}"', f"data.height={args.size}",
                f"data.width={args.size}"] + args.set
        if args.bench:
            return bench(args, bins, work, Path(args.config), sets)
        return trials(args, bins, work, Path(args.config), sets)


if __name__ == "__main__":
    sys.exit(main())
