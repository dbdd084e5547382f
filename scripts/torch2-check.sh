#!/bin/bash
# The trainer against LibTorch 2.x, on a machine without a GPU: fetches a Debian release's
# LibTorch (CPU, with Gloo: trixie's 2.6 by default, sid's 2.14 with --suite sid) and
# everything it needs at run time from Debian's archive into a scratch folder (nothing is
# installed), builds isoflop-train and the trainer's LibTorch tests against it with g++
# (scripts/lib/gxx-trainer.sh), runs the tests under that release's own loader and libc, and
# trains one run with LibTorch 1.13 (build/, `make build`) and 2.x side by side. GPU users
# build against LibTorch 2.x; `make test` builds against Debian's 1.13.
#
#   scripts/torch2-check.sh [--suite SUITE] [WORK]
#       SUITE: trixie (default) or sid; WORK: the scratch folder (default
#       /tmp/isoflop-torch2-SUITE); the build goes to build-torch2/ for trixie and
#       build-torch2-SUITE/ otherwise (git-ignored)
#
# About 11 minutes on 2 cores (downloads 180 MB the first time). The binaries it builds carry
# the release's loader as their interpreter, so a test that starts isoflop-train gets its
# LibTorch too.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
suite=trixie
if [ "${1:-}" = --suite ]; then suite=${2:?--suite needs a Debian suite}; shift 2; fi
case "$suite" in
  trixie) bdir=build-torch2 ;;
  *[!a-z-]*|"") echo "torch2-check: '$suite' is not a Debian suite name" >&2; exit 2 ;;
  *) bdir=build-torch2-$suite ;;
esac
work=${1:-/tmp/isoflop-torch2-$suite}
cd "$here"
mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/sources"
cat >"$work/sources/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources"
          -o Dir::State="$work/apt" -o Dir::State::Lists="$work/apt/lists"
          -o Dir::Cache="$work/apt" -o Dir::Cache::Archives="$work/apt/archives"
          -o Dir::State::status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
echo "== LibTorch from Debian $suite into $work (download only)"
apt-get "${apt_opts[@]}" -qq update || { echo "cannot reach Debian's archive" >&2; exit 1; }
# The closure from an empty system (libc included), so nothing of this machine's is assumed.
apt-get "${apt_opts[@]}" -qq -y --download-only --no-install-recommends \
  install libtorch-dev libgloo-dev libopenblas0-openmp >"$work/download.log" 2>&1 ||
  { tail -n 20 "$work/download.log" >&2; exit 1; }
sys=$work/sys
if [ ! -f "$sys/.complete" ]; then
  rm -rf "$sys" && mkdir -p "$sys"
  for d in "$work"/apt/archives/*.deb; do dpkg-deb -x "$d" "$sys" || exit 1; done
  lib=$sys/usr/lib/x86_64-linux-gnu
  # The links update-alternatives would make: OpenBLAS (OpenMP), as make deps installs for
  # LibTorch 1.13, so the two runs below compare like with like.
  ln -sfn openblas-openmp/libblas.so.3 "$lib/libblas.so.3"
  ln -sfn openblas-openmp/liblapack.so.3 "$lib/liblapack.so.3"
  # Their RUNPATH is $ORIGIN, which is this folder when loaded through the links above.
  ln -sfn openblas-openmp/libopenblas.so.0 "$lib/libopenblas.so.0"
  touch "$sys/.complete"
fi
lib=$sys/usr/lib/x86_64-linux-gnu
# Only LibTorch's and Gloo's headers: this machine's own libc and libstdc++ headers stay.
inc=$work/include
mkdir -p "$inc"
for d in ATen c10 torch caffe2 gloo; do ln -sfn "$sys/usr/include/$d" "$inc/$d"; done
# (LibTorch 2.14 keeps the numbers in torch/headeronly/version.h.)
version=$(cat "$sys/usr/include/torch/csrc/api/include/torch/version.h" \
  "$sys/usr/include/torch/headeronly/version.h" 2>/dev/null |
  sed -n 's/^#define TORCH_VERSION_M[A-Z]* \([0-9]*\)/\1/p' | head -n 2 | paste -sd.)
echo "LibTorch $version; $(ls "$work"/apt/archives/*.deb | wc -l) packages"

echo "== build with g++ ($(g++ --version | head -n 1))"
t0=$SECONDS
# shellcheck source=scripts/lib/gxx-trainer.sh
. "$here/scripts/lib/gxx-trainer.sh"
# Linked against the release's libraries, run by its loader (its libc and libstdc++ are newer
# than this machine's, which the objects were compiled against: backward compatible).
gxx_build_trainer "$bdir" 1 /usr/src/googletest/googletest "$(nproc)" \
  "$work/build.log" -- -isystem "$inc" -isystem "$inc/torch/csrc/api/include" \
  -- -L"$lib" -L"$sys/usr/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -lgloo \
  -Wl,--as-needed -lpthread -Wl,--allow-shlib-undefined \
  -Wl,--dynamic-linker="$lib/ld-linux-x86-64.so.2" -Wl,--disable-new-dtags \
  -Wl,-rpath,"$lib:$sys/usr/lib"
built=$?
if [ $built -ne 0 ] || [ ! -x "$bdir"/bin/trainer_gpu_test ]; then
  echo "BUILD FAILED after $((SECONDS - t0)) s; first errors:"
  grep -m 20 -E "error" "$work/build.log"
  exit 1
fi
echo "built in $((SECONDS - t0)) s"

echo "== the CUDA and NCCL paths compiled (not run) against LibTorch's CUDA headers"
cuda_inc=""
for d in /usr/local/cuda/include /usr/include; do [ -f "$d/cuda_runtime_api.h" ] && cuda_inc=$d && break; done
# Newer libtorch-dev packages carry the CUDA headers themselves (sid's 2.14); trixie's keep them
# in libtorch-cuda-dev, used only where its version is libtorch-dev's.
cinc=""
mkdir -p "$work/cuda"
if [ -f "$inc/c10/cuda/CUDAFunctions.h" ] &&
   [ -f "$inc/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp" ]; then
  cinc=$inc
elif [ -n "$cuda_inc" ]; then
  (cd "$work/cuda" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download libtorch-cuda-dev) &&
    rm -rf "$work/cuda/root" && dpkg-deb -x "$work"/cuda/libtorch-cuda-dev_*.deb "$work/cuda/root" || exit 1
  cuda_version=$(dpkg-deb -f "$work"/cuda/libtorch-cuda-dev_*.deb Version)
  cpu_version=$(dpkg-deb -f "$work"/apt/archives/libtorch-dev_*.deb Version)
  if [ "${cuda_version%%+*}" = "${cpu_version%%+*}" ]; then
    cinc=$work/cuda/root/usr/include
  else
    echo "libtorch-cuda-dev is $cuda_version, libtorch-dev $cpu_version: skipped"
  fi
fi
if [ -n "$cuda_inc" ] && [ -f "$cuda_inc/nccl.h" ] && [ -n "$cinc" ]; then
  # A CPU build generates no c10/cuda/impl/cuda_cmake_macros.h; c10 has a switch for that (the
  # file defines only C10_CUDA_BUILD_SHARED_LIBS, which matters on Windows alone).
  cflags_cuda=()
  [ -f "$cinc/c10/cuda/impl/cuda_cmake_macros.h" ] || cflags_cuda=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
  running=0
  for f in "${GXX_TRAINER_SOURCES[@]}" "${GXX_TRAINER_TESTS[@]}"; do
    g++ -std=c++20 -fsyntax-only -DISOFLOP_HAVE_CUDA -DISOFLOP_HAVE_NCCL "${cflags_cuda[@]}" -Itrainer/include \
      -Icommon/include -I"$bdir"/generated -isystem "$cinc" \
      -isystem "$cinc/torch/csrc/api/include" -isystem "$inc" -isystem "$cuda_inc" \
      -DISOFLOP_SOURCE_DIR='""' -DISOFLOP_BINARY_DIR='""' -DISOFLOP_DATA_DIR='""' "$f" \
      >"$work/cuda/$(basename "$f").log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$(nproc)" ]; then wait -n; running=$((running - 1)); fi
  done
  wait
  for f in "${GXX_TRAINER_SOURCES[@]}" "${GXX_TRAINER_TESTS[@]}"; do
    if grep -q "error:" "$work/cuda/$(basename "$f").log"; then
      echo "$f:" && grep -m 5 "error:" "$work/cuda/$(basename "$f").log"
      cuda_failed=1
    fi
  done
  [ -z "${cuda_failed:-}" ] && echo "all ${#GXX_TRAINER_SOURCES[@]} sources and ${#GXX_TRAINER_TESTS[@]} test files compile with CUDA and NCCL on"
elif [ -z "$cuda_inc" ] || [ ! -f "$cuda_inc/nccl.h" ]; then
  echo "no CUDA toolkit with nccl.h here: skipped"
fi

echo "== the trainer's LibTorch tests on $version (CUDA cases skip: no GPU)"
"$bdir"/bin/trainer_gpu_test >"$work/test.log" 2>&1
rc=$?
grep -E "^\[ +(FAILED|PASSED|SKIPPED) +\] [0-9]+ test" "$work/test.log"
grep -E "^\[  FAILED  \] [A-Za-z]" "$work/test.log" | sort -u
[ $rc -eq 0 ] || { echo "tests FAILED (exit $rc); log: $work/test.log"; }

echo "== one run on LibTorch 1.13 (build/) and $version, 3 interleaved rounds"
status=0
if [ -x build/bin/isoflop-train ]; then
  for round in 1 2 3; do
    for t in 1.13:build/bin/isoflop-train "$version":"$bdir"/bin/isoflop-train; do
      d=$work/run-${t%%:*}-$round
      rm -rf "$d" && mkdir -p "$d"
      cat >"$d/run.json" <<'EOF'
{"schema": 1, "seed": 3,
 "model": {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab_size": 32, "seq_len": 64},
 "data": {"source": "synthetic"},
 "train": {"tokens": 200000, "batch_tokens": 2048, "micro_batch": 8, "eval_interval_steps": 25,
           "eval_tokens": 8192, "log_interval_steps": 10, "ckpt_interval_steps": 50,
           "threads": 2, "device": "cpu"}}
EOF
      "${t#*:}" --run-dir "$d" --quiet || status=1
    done
  done
  /usr/bin/python3 - "$work" "$version" <<'PY' || status=1
import json, statistics, sys
work, version = sys.argv[1:]
def load(v, r):
    d = f"{work}/run-{v}-{r}"
    return (json.load(open(f"{d}/status.json")), json.load(open(f"{d}/info.json")),
            [json.loads(l) for l in open(f"{d}/metrics.jsonl")])
runs = {v: [load(v, r) for r in (1, 2, 3)] for v in ("1.13", version)}
print(f"{'LibTorch':>9} {'state':>9} {'steps':>6} {'final val loss':>15} {'tokens/s (median of 3)':>23}")
for v, rs in runs.items():
    st, info, _ = rs[0]
    tps = statistics.median(s["tokens"] / s["wall_s"] for s, _, _ in rs)
    print(f"{info['torch_version']:>9} {st['state']:>9} {st['step']:>6} "
          f"{st['final_val_loss']:>15.9f} {tps:>23,.0f}")
(a, _, ra), (b, _, rb) = runs["1.13"][0], runs[version][0]
rel = abs(a["final_val_loss"] - b["final_val_loss"]) / a["final_val_loss"]
worst = max(abs(x["train_loss"] - y["train_loss"]) / x["train_loss"] for x, y in zip(ra, rb))
print(f"final val loss differs by {rel:.1e} relative; train loss by at most {worst:.1e} "
      f"over {len(ra)} logged steps")
sys.exit(0 if a["state"] == b["state"] == "finished" and rel < 1e-3 else 1)
PY
else
  echo "no build/bin/isoflop-train (run make build): skipped"
fi
[ $rc -eq 0 ] && [ $status -eq 0 ] && [ -z "${cuda_failed:-}" ]
