#!/usr/bin/env bash
# Idempotent setup for convtt: Debian packages the build needs and a project-local PyTorch.
#
# Quiet and fast when everything is present. Honoured environment:
#   LIBTORCH=/path/to/libtorch   use an existing libtorch (a dir with include/ and lib/, e.g.
#                                <site-packages>/torch); no venv is created.
#   CONVTT_VENV=DIR              where the project-local venv lives (default: <repo>/.venv).
#   CONVTT_SKIP_APT=1            do not touch Debian packages (you installed them yourself).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_version="2.11.0"
venv="${CONVTT_VENV:-$root/.venv}"

say() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages ----------------------------------------------------------------------------
# slurm-wlm + munge: the end-to-end Slurm test starts a single-node cluster (.ci/slurm-cluster.sh).
# patchelf: .ci/gpu-kit.sh points the kit's binaries at their bundled libraries.
# elfutils: eu-stack, for the native stacks of a hung run's post-mortem.
apt_packages=(libhdf5-dev libopenmpi-dev openmpi-bin clang libclang-dev pkg-config slurm-wlm munge patchelf elfutils)
if [[ "${CONVTT_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    sudo=""
    if [[ $(id -u) != 0 ]]; then
      command -v sudo >/dev/null || { say "need root or sudo to install: ${missing[*]}"; exit 1; }
      sudo="sudo"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# --- libtorch -----------------------------------------------------------------------------------
if [[ -n "${LIBTORCH:-}" ]]; then
  [[ -f "$LIBTORCH/lib/libtorch_cpu.so" ]] || {
    say "LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so; point it at a libtorch dir or <site-packages>/torch"
    exit 1
  }
  # Resolved: processes cargo starts inherit LIBTORCH=<repo>/.libtorch (.cargo/config.toml),
  # the very link this script maintains below.
  torch_dir="$(readlink -f "$LIBTORCH")"
else
  py="$venv/bin/python"
  if [[ ! -x "$py" ]]; then
    say "creating virtual environment $venv"
    python3 -m venv "$venv"
  fi
  have="$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
  if [[ "${have%%+*}" != "$torch_version" ]]; then
    say "installing torch==$torch_version into $venv (about 2.7 GB download, once)"
    "$py" -m pip install -q --disable-pip-version-check "torch==$torch_version"
  fi
  torch_dir="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch"
fi

# .cargo/config.toml points LIBTORCH at this stable link; keep it on whichever torch is in use.
# (torch-sys re-runs its build script only when LIBTORCH changes: after swapping the torch behind
# the link, run `cargo clean -p torch-sys`.)
if [[ "$(readlink "$root/.libtorch" 2>/dev/null)" != "$torch_dir" ]]; then
  ln -sfn "$torch_dir" "$root/.libtorch"
fi

# --- Python tools for the tests -----------------------------------------------------------------
# tests/e2e/data.rs reads our HDF5 shards with h5py (interoperability with the Python ecosystem).
py="$venv/bin/python"
if [[ ! -x "$py" ]]; then
  say "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
# The PyTorch baseline (worker/scripts/baseline.py) reads the same shards with h5py too.
if ! "$py" -c 'import h5py' 2>/dev/null; then
  say "installing h5py into $venv (HDF5 interop test, PyTorch baseline)"
  "$py" -m pip install -q --disable-pip-version-check h5py
fi
# tests/e2e/tensorboard.rs reads our event files back with TensorBoard itself.
if ! "$py" -c 'import tensorboard' 2>/dev/null; then
  say "installing tensorboard into $venv (TensorBoard event-file test; tensorboard --logdir)"
  "$py" -m pip install -q --disable-pip-version-check tensorboard
fi
