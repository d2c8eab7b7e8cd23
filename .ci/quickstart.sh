#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build the release binaries, check the
# machine and the quick-start config, generate a small Moving-MNIST set from the bundled MNIST
# digits, train a small Conv-TT-LSTM on CPU with 2 workers through convtt-launch, evaluate it
# beside the copy-last-frame and all-black predictors, and draw its predictions.
# Writes data/quickstart-mmnist/ (once) and a new runs/quickstart-<time>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }
bin="$root/target/release"
cfg="configs/quickstart.toml"
data="data/quickstart-mmnist"
run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
start=$SECONDS

bash .ci/setup.sh
step "cargo build --release"
cargo build --release --locked --bins

step "convtt-worker doctor"
"$bin/convtt-worker" doctor

step "convtt-launch check --config $cfg"
"$bin/convtt-launch" check --config "$cfg" > /dev/null

if [[ -f "$data/dataset.toml" ]] && "$bin/convtt-data" verify "$data" > /dev/null 2>&1; then
  step "dataset $data is present and verifies"
else
  step "convtt-data moving-mnist → $data"
  "$bin/convtt-data" moving-mnist --out "$data" --force --train 2048 --valid 64 --test 128 \
    --frames 20 --size 32 --digit-size 20 --digits 1 --seed 1 --shard-clips 512
  "$bin/convtt-data" verify "$data"
fi

step "convtt-worker model-info --config $cfg"
"$bin/convtt-worker" model-info --config "$cfg"

step "convtt-launch --cpu-workers 2 --config $cfg --run-dir $run"
"$bin/convtt-launch" --cpu-workers 2 --config "$cfg" --run-dir "$run" --quiet-workers

step "convtt-worker eval --split test (the trained horizon, 5 frames)"
"$bin/convtt-worker" eval --config "$cfg" --run-dir "$run" --checkpoint auto --split test --horizon 5

step "convtt-worker predict → $run/plots/test-clip-0.{png,gif}"
"$bin/convtt-worker" predict --config "$cfg" --run-dir "$run" --checkpoint auto --split test \
  --clip 0 --future 5 --out "$run/plots/test-clip-0.png" --gif "$run/plots/test-clip-0.gif"

step "results in $run"
cat "$run/summary.toml"
ls "$run/plots"
printf '\nquick start finished in %d s: %s\n' "$((SECONDS - start))" "$run" >&2
