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
step "cargo clippy (the GPU-only tests too, -D warnings)"
cargo clippy -p convtt-common -p convtt-worker --all-targets --locked \
  --features convtt-common/gpu-tests,convtt-worker/gpu-tests -- -D warnings
step "cargo build (binaries for the end-to-end tests, GPU test binaries for the kit test)"
cargo build --workspace --bins --locked
# tests/e2e/kit.rs packs these with .ci/gpu-kit.sh --profile dev; building them here keeps that
# test's own cargo call a no-op instead of a compile racing the other tests for the cores.
cargo test --no-run --locked -p convtt-common -p convtt-worker \
  --features convtt-common/gpu-tests,convtt-worker/gpu-tests
step "cargo test"
# The Slurm end-to-end test must run here: a cluster that cannot start fails it instead of
# skipping it. --no-fail-fast: one failing test binary must not hide the others' results.
CONVTT_REQUIRE_SLURM=1 cargo test --workspace --locked --no-fail-fast
