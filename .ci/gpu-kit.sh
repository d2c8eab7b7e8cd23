#!/usr/bin/env bash
# Builds the relocatable convtt kit: one archive that runs on a machine with no Rust, no network
# and none of our Debian packages — a bare GPU machine, or cluster nodes that differ from the
# build host — given a PyTorch 2.11 (its libtorch is used at run time).
#
#   bash .ci/gpu-kit.sh [OUT_DIR] [--profile release|dev]
#
# OUT_DIR (default target/kit) receives convtt-kit.tar.gz (and the unpacked tree convtt-kit/):
#   bin/        convtt-launch, convtt-worker, convtt-data (stripped; RUNPATH $ORIGIN/../lib)
#   tests/      the GPU test binaries (cargo test --no-run --features gpu-tests), stripped
#   lib/        every shared library those need that is neither glibc/libstdc++/libgcc nor
#               libtorch/CUDA/NCCL (found by the dynamic loader: OpenMPI, HDF5 and their deps)
#   configs/    the shipped configs
#   scripts/    the PyTorch baseline and the side-by-side comparison
#   convtt-env  finds libtorch at run time ($CONVTT_LIBTORCH, else the torch of the python3 on
#               PATH) and runs a command with lib/ + that libtorch (+ its NCCL) on the library path
#   gpu-check   every GPU check and measurement in one run (README "GPU kit")
#   MANIFEST.json  what was built, from which commit, against which torch
#
# --profile dev packs the debug build (what the CPU test of the kit uses: it reuses the test
# suite's build); release is the default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="target/kit"
profile="release"
while (($#)); do
  case "$1" in
    --profile) profile="${2:?--profile needs release or dev}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "gpu-kit: unknown option $1" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
case "$profile" in
  release) cargo_profile=(--release); target_sub=release ;;
  dev) cargo_profile=(); target_sub=debug ;;
  *) echo "gpu-kit: --profile must be release or dev (got $profile)" >&2; exit 2 ;;
esac
limit_mib=48

say() { printf 'gpu-kit: %s\n' "$*" >&2; }

bash .ci/setup.sh
for tool in patchelf strip ldd python3 tar gzip; do
  command -v "$tool" >/dev/null || { say "$tool is missing (bash .ci/setup.sh installs patchelf)"; exit 1; }
done

say "building the binaries ($profile)"
cargo build "${cargo_profile[@]}" --workspace --bins --locked
say "building the GPU test binaries ($profile, --features gpu-tests)"
# The executables cargo reports (one JSON line per artifact).
tests_json="$(cargo test "${cargo_profile[@]}" --no-run --locked \
  -p convtt-common -p convtt-worker \
  --features convtt-common/gpu-tests,convtt-worker/gpu-tests \
  --message-format=json)"
mapfile -t test_bins < <(printf '%s\n' "$tests_json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    # The libraries unit tests hold every GPU test.
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test") \
            and "lib" in t.get("kind", []):
        print(t["name"] + "\t" + m["executable"])
')
((${#test_bins[@]} == 2)) || { say "expected 2 GPU test binaries, cargo reported: ${test_bins[*]:-none}"; exit 1; }

out="$(mkdir -p "$out" && cd "$out" && pwd)"
stage="$out/convtt-kit"
rm -rf "$stage" "$out/convtt-kit.tar.gz"
mkdir -p "$stage"/{bin,tests,lib,configs,scripts}

for b in convtt-launch convtt-worker convtt-data; do
  strip -o "$stage/bin/$b" "target/$target_sub/$b"
done
for entry in "${test_bins[@]}"; do
  name="${entry%%$'\t'*}"; path="${entry#*$'\t'}"
  strip -o "$stage/tests/$name-gpu-tests" "$path"
done

# Libraries: what the loader resolves for every binary (with the build's own rpaths), minus
# glibc, the GCC runtime, and libtorch/CUDA/NCCL (those come from the machine's PyTorch).
torch_dir="$(readlink -f .libtorch)"
nvidia_dir="$(readlink -f "$torch_dir/..")/nvidia"
is_system() {
  case "$1" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libutil.so*|\
    libresolv.so*|libanl.so*|libnsl.so*|libmvec.so*|libBrokenLocale.so*|libstdc++.so*|libgcc_s.so*) return 0 ;;
    libcuda.so*|libnccl.so*|libnvidia*) return 0 ;;
  esac
  return 1
}
declare -A bundled=()
# (The staged copies still carry the build's RUNPATH here, so ldd resolves them as built.)
for f in "$stage"/bin/* "$stage"/tests/*; do
  while read -r name arrow path _; do
    if [[ $arrow == "=>" && $path == "not" ]]; then
      say "$(basename "$f") needs $name, which the loader does not find on this machine"; exit 1
    fi
    [[ $arrow == "=>" && -n $path ]] || continue
    is_system "$name" && continue
    real="$(readlink -f "$path")"
    case "$real" in "$torch_dir"/*|"$nvidia_dir"/*) continue ;; esac
    if [[ -z ${bundled[$name]:-} ]]; then
      cp -L "$path" "$stage/lib/$name"
      bundled[$name]="$real"
    fi
  done < <(ldd "$f")
done
# The CUDA-graph shim (train.cuda_graphs), built by worker/build.rs where the CUDA headers are;
# dlopened by the worker, it finds libtorch through convtt-env's library path.
shim="$(ls -t target/"$target_sub"/build/convtt-worker-*/out/libconvtt_cuda_graph.so 2>/dev/null | head -1)"
if [[ -n $shim ]]; then
  cp "$shim" "$stage/lib/libconvtt_cuda_graph.so"
  patchelf --set-rpath '$ORIGIN' "$stage/lib/libconvtt_cuda_graph.so"
else
  say "no CUDA-graph shim was built (no CUDA headers?): train.cuda_graphs is unavailable in the kit"
fi
chmod 644 "$stage"/lib/*
for f in "$stage"/bin/* "$stage"/tests/*; do
  patchelf --set-rpath '$ORIGIN/../lib' "$f"
done

cp configs/*.toml "$stage/configs/"
cp worker/scripts/baseline.py worker/scripts/side_by_side.py "$stage/scripts/"
cp worker/scripts/convtt-env worker/scripts/gpu-check "$stage/"
chmod +x "$stage/convtt-env" "$stage/gpu-check"

torch_version="$(sed -n "s/^__version__ = ['\"]\(.*\)['\"]$/\1/p" "$torch_dir/version.py" 2>/dev/null || true)"
python3 - "$stage" "$profile" "${torch_version:-unknown}" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$(git status --porcelain 2>/dev/null | wc -l)" "$(ldd --version | head -1)" <<'PY'
import json, os, sys, time
stage, profile, torch, commit, dirty, glibc = sys.argv[1:7]
files = sorted(os.path.relpath(os.path.join(d, f), stage) for d, _, fs in os.walk(stage) for f in fs)
json.dump({
    "kit_format": 1,
    "profile": profile,
    "commit": commit,
    "uncommitted_changes": int(dirty) > 0,
    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "torch_version": torch,
    "build_glibc": glibc,
    "build_target_dir": os.path.abspath("target"),
    "files": files,
}, open(os.path.join(stage, "MANIFEST.json"), "w"), indent=2)
PY
printf '%s\n' "${torch_version%%+*}" > "$stage/TORCH_VERSION"

tar -C "$out" -czf "$out/convtt-kit.tar.gz.tmp" convtt-kit
mv "$out/convtt-kit.tar.gz.tmp" "$out/convtt-kit.tar.gz"
bytes=$(stat -c %s "$out/convtt-kit.tar.gz")
mib=$(( (bytes + 1048575) / 1048576 ))
say "$(ls "$stage/lib" | wc -l) bundled libraries, $(du -sh "$stage" | cut -f1) unpacked"
say "wrote $out/convtt-kit.tar.gz ($mib MiB)"
if ((mib > limit_mib)); then
  say "the archive is over $limit_mib MiB: it would not travel to the GPU machine with room to spare"
  exit 1
fi
