#!/bin/bash
# The trainer's GPU check: builds isoflop-train and its tests against the LibTorch 2.x inside a
# GPU machine's python3 torch, runs them with ISOFLOP_EXPECT_CUDA=1 (so the CUDA cases fail
# rather than skip), then times two sizes (about 20M parameters, and GPT-2 small's 125M) for 200
# steps each in bf16 autocast, beside the same model and step in PyTorch
# (bench/trainer/gpu_reference.py).
#
#   scripts/device-check.sh prepare   here, on Debian: copies the header-only and test
#                                     dependencies (CLI11, nlohmann-json, GoogleTest with their
#                                     CMake configs and GoogleTest's sources, built there when
#                                     torch uses the pre-C++11 ABI) into .device-deps/ (git-ignored), since
#                                     the GPU machine cannot install packages
#   scripts/device-check.sh run       there, from the repository root, with .device-deps
#                                     carried; writes summary.txt and logs.tgz (every log,
#                                     the GPU run's metrics) to $OUT (or /tmp/device-check)
#
# The `run` step should fit in about 6 minutes on one H200 (estimated: build ~2 min on 16
# cores, tests ~2, the runs ~2; it has never run). If CMake cannot
# configure against that torch, it falls back to g++ straight against torch's include and lib
# folders (isoflop-train plus one test binary with the model and binary tests), so the CUDA
# checks still run; both paths were exercised here against Debian's LibTorch 1.13 on CPU, where
# the CUDA cases fail as they must under ISOFLOP_EXPECT_CUDA=1.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
deps="$here/.device-deps"

prepare() {
  rm -rf "$deps" && mkdir -p "$deps"
  local list="$deps/.files"
  for pkg in libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev googletest; do
    dpkg -L "$pkg" >/dev/null 2>&1 || { echo "prepare: package $pkg is not installed" >&2; exit 1; }
    dpkg -L "$pkg" | while read -r f; do
      case "$f" in /usr/share/doc/*) continue ;; esac
      [ -f "$f" ] && echo "${f#/}"
    done
  done >"$list"
  tar -C / -cf - --no-recursion -T "$list" | tar -C "$deps" -xf - || exit 1
  rm -f "$list"
  echo "prepare: $(du -sh "$deps" | cut -f1) in $deps; carry .device-deps"
}

# throughput RUN LAYERS D_MODEL HEADS NAME: one isoflop-train run on the GPU and the PyTorch
# reference on the same shape; tokens/s and MFU into the summary.
throughput() {
  local run=$1 layers=$2 d=$3 heads=$4 name=$5
  say "== throughput $name: $layers layers x $d, $heads heads, vocab 50304, seq 1024, bf16 autocast"
  local r="$run/r-$name"
  # The process's device memory as nvidia-smi sees it (context included), sampled twice a
  # second, beside the estimate (info.json) and the allocator's peak (status.json).
  (while sleep 0.5; do
     nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null
   done) >"$out/smi_$name.log" &
  local sampler=$!
  timeout 240 $bin/isoflop-train --out "$r" --quiet --device cuda --data bin \
    --data-path "$run/data/train.bin" --val-path "$run/data/val.bin" \
    --n-layer "$layers" --d-model "$d" --n-head "$heads" --vocab-size 50304 --seq-len 1024 \
    --batch-tokens 131072 --micro-batch 32 --tokens 26214400 --eval-interval 100000 \
    --eval-tokens 65536 --log-interval 10 --ckpt-interval 100000 >"$out/gpu_run_$name.log" 2>&1
  local run_rc=$?
  kill $sampler 2>/dev/null
  say "isoflop-train exit $run_rc"
  mkdir -p "$out/run-$name"
  cp "$r/info.json" "$r/status.json" "$r/metrics.jsonl" "$out/run-$name/" 2>/dev/null
  if [ $run_rc -ne 0 ]; then
    tail -n 20 "$out/gpu_run_$name.log" | tee -a "$summary"
    return 1
  fi
  python3 - "$r" "$layers" "$d" "$out/smi_$name.log" <<'PY' | tee -a "$summary"
import json, sys
d, layers, d_model, smi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
info = json.load(open(f"{d}/info.json"))
rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if l.endswith("\n")]
tps = sorted(r["tokens_per_s"] for r in rows[2:] if r.get("tokens_per_s"))  # skip warm-up lines
med = tps[len(tps) // 2] if tps else float("nan")
best = tps[-1] if tps else float("nan")
n, fpt = info["n_total"], info["flops_per_token_6n"]
print(f"isoflop {info['device']} {info['precision']} torch {info['torch_version']} N {n:,}: "
      f"{len(rows)} logged steps, tokens/s median {med:,.0f} best {best:,.0f}")
# MFU: model FLOP per token over the H200's dense bf16 peak (989 TFLOP/s, NVIDIA's figure) and
# over the 790 TFLOP/s an 8192^3 bf16 matmul reaches there; 6N (N with the tied head, a real
# matmul) and PaLM's 6N + 12 L T d, which adds attention's score and value products.
palm = fpt + 12 * layers * 1024 * d_model
for label, f in (("6N", fpt), ("6N+12LTd", palm)):
    print(f"  model FLOP/s ({label}) {med * f / 1e12:.1f} TFLOP/s: MFU {100 * med * f / 989e12:.1f}% "
          f"of 989 peak, {100 * med * f / 790e12:.1f}% of 790 measured matmul")
open(f"{d}/tokens_per_s_median", "w").write(f"{med:.0f}\n")
st = json.load(open(f"{d}/status.json"))
print(f"  state {st.get('state')} step {st.get('step')}; train_loss first/last "
      f"{rows[0]['train_loss']:.3f}/{rows[-1]['train_loss']:.3f}; final val_loss "
      f"{st.get('final_val_loss')}")
used = [float(l.split(",")[1]) for l in open(smi) if l.count(",") == 1 and l.split(",")[1].strip().isdigit()]
gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "n/a"
est, peak = info.get("memory_estimate_bytes"), st.get("peak_memory_bytes")
smi_peak = max(used) * 2**20 if used else None
print(f"  memory: estimate {gib(est)}; measured {st.get('peak_memory_of')} peak {gib(peak)}, "
      f"nvidia-smi process peak {gib(smi_peak)} (context included)"
      + (f": estimate / nvidia-smi {est / smi_peak:.2f}" if est and smi_peak else ""))
# The estimate's tensor terms against the caching allocator's peak allocated bytes: the
# activation model alone, without the context and the allocator's rounding.
est_t, peak_t = info.get("memory_estimate_tensor_bytes"), st.get("peak_tensor_bytes")
print(f"  tensors: estimate {gib(est_t)}; allocator's peak allocated {gib(peak_t)}"
      + (f": {est_t / peak_t:.2f}x" if est_t and peak_t else ""))
# The host side, which SLURM's --mem limits (no estimate of it yet: this calibrates one).
n_params = info["n_total"]
host = st.get("peak_host_memory_bytes")
print(f"  host: peak resident set {gib(host)}"
      + (f", {host / n_params:.1f} bytes/parameter" if host else ""))
PY
  timeout 120 python3 bench/trainer/gpu_reference.py --device cuda --layers "$layers" \
    --d-model "$d" --heads "$heads" --vocab 50304 --seq 1024 --micro-batch 32 --accum 4 \
    --steps 20 >"$out/reference_$name.log" 2>&1
  local ref_rc=$?
  tail -n 3 "$out/reference_$name.log" | tee -a "$summary"
  [ $ref_rc -eq 0 ] || say "gpu_reference.py exit $ref_rc"
  local ours theirs
  ours=$(cat "$r/tokens_per_s_median" 2>/dev/null)
  theirs=$(sed -n 's/.* tokens\/s \([0-9,]*\) .*/\1/p' "$out/reference_$name.log" | tr -d , | tail -n 1)
  [ -n "$ours" ] && [ -n "$theirs" ] &&
    say "$name: isoflop-train $ours tokens/s, PyTorch $theirs: ratio $(python3 -c "print(f'{$ours / $theirs:.2f}')")"
  return 0
}

run() {
  # Logs go to a scratch folder; at exit the summary and one archive of the logs land in
  # $OUT (the device tool returns at most 8 files).
  dest=${OUT:-/tmp/device-check}
  out=$(mktemp -d /tmp/device-check-logs.XXXXXX)
  mkdir -p "$dest"
  summary="$out/summary.txt"
  : >"$summary"
  trap 'cp "$summary" "$dest/summary.txt"; tar -C "$out" -czf "$dest/logs.tgz" .' EXIT
  say() { echo "$*" | tee -a "$summary"; }
  cd "$here"
  [ -d "$deps/usr" ] || { say "no .device-deps: run 'scripts/device-check.sh prepare' here and carry it"; exit 1; }

  say "== machine"
  nvidia-smi -L 2>&1 | tee -a "$summary"
  say "$(g++ --version | head -n 1); $(cmake --version | head -n 1); $(command -v ninja || echo 'no ninja')"
  say "$( (/usr/local/cuda/bin/nvcc --version 2>/dev/null || echo 'no nvcc') | tail -n 1)"
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || exit 1
  say "$(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
        "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")')"

  say "== build (ISOFLOP_TRAINER_ONLY against $torch_prefix)"
  cuda_root=/usr/local/cuda
  [ -d "$cuda_root" ] && export PATH="$cuda_root/bin:$PATH"
  local abi
  abi=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  # NCCL's header: pip wheels keep it in the nvidia-nccl package, not in torch/include.
  local nccl_inc nccl_lib=""
  nccl_inc=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null)
  if [ -n "$nccl_inc" ] && [ -f "$nccl_inc/nccl.h" ]; then
    nccl_lib="-L$nccl_inc/../lib -Wl,-rpath,$nccl_inc/../lib -l:libnccl.so.2"
  elif [ -f "$cuda_root/include/nccl.h" ]; then
    nccl_inc="$cuda_root/include"
  else
    nccl_inc=""
  fi
  say "nccl.h: ${nccl_inc:-not found (multi-rank CUDA runs compiled out)}"
  local t0=$SECONDS gen=Ninja
  command -v ninja >/dev/null || gen="Unix Makefiles"
  # The CMake path links Debian's GoogleTest, built with the C++11 ABI: a pre-C++11-ABI torch
  # goes straight to the g++ path, which builds GoogleTest from its sources with torch's ABI.
  # It also links the toolkit's CUDA libraries, which must be the CUDA torch was built with;
  # the g++ path links only torch's own.
  local torch_cuda nvcc_cuda
  torch_cuda=$(python3 -c 'import torch; print(torch.version.cuda or "")')
  nvcc_cuda=$("$cuda_root/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  say "CUDA: torch built with ${torch_cuda:-none}, toolkit ${nvcc_cuda:-none}"
  if [ "$abi" = 1 ] && [ "$torch_cuda" = "$nvcc_cuda" ] &&
     cmake -S . -B build-device -G "$gen" -DCMAKE_BUILD_TYPE=Release \
       -DISOFLOP_TRAINER_ONLY=ON -DISOFLOP_BUILD_BENCH=OFF \
       -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DCUDAToolkit_ROOT="$cuda_root" \
       -DUSE_SYSTEM_NVTX=ON -Dnvtx3_dir="$cuda_root/include" \
       ${nccl_inc:+-DCMAKE_CXX_FLAGS="-isystem $nccl_inc"} \
       ${nccl_lib:+-DCMAKE_EXE_LINKER_FLAGS="$nccl_lib"} \
       >"$out/configure.log" 2>&1 &&
     cmake --build build-device -j "$(nproc)" >"$out/build.log" 2>&1; then
    say "built in $((SECONDS - t0)) s"
    bin=build-device/bin
  else
    [ "$abi" = 1 ] || say "torch uses the pre-C++11 ABI: the g++ path builds everything with it"
    [ "$torch_cuda" = "$nvcc_cuda" ] || say "toolkit CUDA differs from torch's: the g++ path"
    say "CMAKE BUILD FAILED or skipped after $((SECONDS - t0)) s; last lines:"
    tail -n 40 "$out/configure.log" "$out/build.log" 2>/dev/null | tee -a "$summary"
    # Fallback: the same sources straight through g++ against torch's own include and lib
    # folders, so the CUDA checks still run (C++20, as CMake builds it: newer LibTorch's (2.14's)
    # headers require it).
    say "== fallback build with g++"
    t0=$SECONDS
    bin=build-device-manual/bin
    local tdir tinc=() tlib
    tdir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    for d in $(python3 -c 'from torch.utils.cpp_extension import include_paths; print(*include_paths())'); do
      tinc+=(-isystem "$d")
    done
    tlib="-L$tdir/lib -Wl,-rpath,$tdir/lib -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10"
    ls "$tdir"/lib/libtorch_cuda.so >/dev/null 2>&1 && tlib="$tlib -ltorch_cuda -lc10_cuda"
    tlib="$tlib -Wl,--as-needed"
    # NCCL's process group where this LibTorch has CUDA (distributed.cc checks the headers).
    # Gloo is for CPU ranks (tested in make test); pip's LibTorch keeps its gloo symbols private.
    if ls "$tdir"/lib/libtorch_cuda.so >/dev/null 2>&1; then
      tinc+=(-DISOFLOP_HAVE_NCCL -DISOFLOP_HAVE_CUDA -isystem "$cuda_root/include")
      [ -n "$nccl_inc" ] && tinc+=(-isystem "$nccl_inc") && tlib="$tlib $nccl_lib"
    fi
    tinc+=(-DISOFLOP_NO_GLOO -isystem "$deps/usr/include")
    # shellcheck source=scripts/lib/gxx-trainer.sh
    . "$here/scripts/lib/gxx-trainer.sh"
    gxx_build_trainer build-device-manual "$abi" "$deps/usr/src/googletest/googletest" \
      "$(nproc)" "$out/manual_build.log" -- "${tinc[@]}" -- $tlib -lpthread
    if [ -x "$bin/isoflop-train" ] && [ ! -x "$bin/trainer_gpu_test" ]; then
      say "TEST BINARY FAILED to build (isoflop-train built); first errors:"
      grep -m 20 -E "error" "$out/manual_build.log" | tee -a "$summary"
    fi
    if [ ! -x "$bin/isoflop-train" ]; then
      say "FALLBACK BUILD FAILED after $((SECONDS - t0)) s; last lines:"
      grep -m 20 -E "error" "$out/manual_build.log" | tee -a "$summary"
      tail -n 20 "$out/manual_build.log" | tee -a "$summary"
      exit 1
    fi
    say "fallback built in $((SECONDS - t0)) s"
  fi
  say "$(ldd $bin/isoflop-train | grep -oE 'lib(torch_cuda|c10_cuda|cudart)[^ ]*' | sort -u | tr '\n' ' ')"

  say "== tests (ISOFLOP_EXPECT_CUDA=1)"
  local rc=1
  if [ "$bin" = build-device-manual/bin ]; then  # the fallback's single test binary
    if [ -x "$bin/trainer_gpu_test" ]; then
      ISOFLOP_EXPECT_CUDA=1 timeout 240 "$bin/trainer_gpu_test" >"$out/gpu_test.log" 2>&1
      rc=$?
    fi
    grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) +\]" "$out/gpu_test.log" | tee -a "$summary"
  else
    ISOFLOP_EXPECT_CUDA=1 timeout 240 ctest --test-dir build-device --output-on-failure -j 6 \
      >"$out/ctest.log" 2>&1
    rc=$?
    grep -E "tests passed|tests failed|Failed|\*\*\*" "$out/ctest.log" | tee -a "$summary"
    ISOFLOP_EXPECT_CUDA=1 $bin/trainer_model_test --gtest_filter='ModelCuda.*:StepValuesCuda.*' \
      >"$out/model_cuda.log" 2>&1
    grep -E "^\[ +(OK|FAILED|SKIPPED) +\]" "$out/model_cuda.log" | tee -a "$summary"
  fi

  # Two sizes, each for 200 steps of 128 Ki-token batches (micro-batch 32 x 1024, 4 micro-steps)
  # in bf16 autocast, then the same model and step in PyTorch on the same GPU.
  local run=/tmp/isoflop-gpu-run
  rm -rf "$run" && mkdir -p "$run/data"
  python3 - "$run/data" <<'PY'
# uint16 token files without numpy (a pip torch does not bring it): int16 holds the same bits.
import ctypes, sys, torch
g = torch.Generator().manual_seed(0)
for name, n in (("train.bin", 50_000_000), ("val.bin", 1_000_000)):
    t = torch.randint(0, 50257, (n,), generator=g, dtype=torch.int32).to(torch.int16)
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        f.write(ctypes.string_at(t.data_ptr(), 2 * n))
PY
  local size failed=0
  for size in "8 256 4 20M" "12 768 12 125M"; do
    throughput "$run" $size || failed=1
  done
  [ $failed -eq 0 ] || rc=1
  return $rc
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/device-check.sh prepare|run" >&2; exit 2 ;;
esac
