#!/usr/bin/env bash
# The whole test suite: installs what is missing (.ci/setup.sh), then formatting, lints, the
# binaries the end-to-end tests drive, and every test. `.ci/run` calls exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

bash .ci/setup.sh
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins --locked
step "cargo test"
# The Slurm end-to-end test must run here: a cluster that cannot start fails it instead of
# skipping it. --no-fail-fast: one failing test binary must not hide the others' results.
CONVTT_REQUIRE_SLURM=1 cargo test --workspace --locked --no-fail-fast
