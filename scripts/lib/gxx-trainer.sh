# Sourced by scripts/device-check.sh and scripts/torch2-check.sh: builds isoflop-train and one
# test binary (the LibTorch model, MoE, reducer, step-values and binary tests) straight through
# g++ against a LibTorch that CMake cannot or need not configure against.
#
#   gxx_build_trainer DIR ABI GTEST_SRC JOBS LOG -- COMPILE_FLAGS... -- LINK_FLAGS...
#
# DIR gets bin/isoflop-train and bin/trainer_gpu_test; ABI is _GLIBCXX_USE_CXX11_ABI (0 or 1);
# GTEST_SRC is GoogleTest's source folder (built here, with that ABI). COMPILE_FLAGS carry the
# LibTorch include folders and any -D; LINK_FLAGS the libraries. Returns 0 when isoflop-train
# was built; a test file that fails to compile costs only the test binary. Every compiler
# message goes to LOG.

GXX_TRAINER_SOURCES=(trainer/src/accounting.cc trainer/src/memory.cc trainer/src/run_config.cc
  trainer/src/schedule.cc trainer/src/synthetic.cc trainer/src/data.cc trainer/src/run_dir.cc trainer/src/run_protocol.cc
  common/src/files.cc common/src/process.cc common/src/subprocess.cc trainer/src/model.cc
  trainer/src/moe.cc trainer/src/train_loop.cc trainer/src/distributed.cc
  trainer/src/step_values.cc trainer/src/tensor_bytes.cc)
GXX_TRAINER_TESTS=(tests/trainer/model_test.cc tests/trainer/moe_test.cc
  tests/trainer/distributed_test.cc tests/trainer/step_values_test.cc tests/trainer/tensor_bytes_test.cc
  tests/trainer/train_binary_test.cc)

gxx_build_trainer() {
  local dir=$1 abi=$2 gt=$3 jobs=$4 log=$5
  shift 5
  [ "$1" = -- ] && shift
  local cflags=() lflags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cflags+=("$1"); shift; done
  [ "${1:-}" = -- ] && shift
  lflags=("$@")
  local root
  root=$(pwd)
  mkdir -p "$dir/bin" "$dir/generated/isoflop/common"
  sed 's/@PROJECT_VERSION@/gxx-build/' common/version.h.in >"$dir/generated/isoflop/common/version.h"
  local flags=(-std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI="$abi" -Itrainer/include -Icommon/include
               -I"$dir/generated" "${cflags[@]}")
  local defs=(-DISOFLOP_SOURCE_DIR="\"$root\"" -DISOFLOP_BINARY_DIR="\"$root/$dir/bin\""
              -DISOFLOP_DATA_DIR="\"$root/data\"")
  # One job per file, at most `jobs` at a time; each job's status lands in its .rc file.
  local units=("${GXX_TRAINER_SOURCES[@]}" trainer/src/main.cc "${GXX_TRAINER_TESTS[@]}"
               "$gt/src/gtest-all.cc" "$gt/src/gtest_main.cc")
  local f o running=0
  for f in "${units[@]}"; do
    o="$dir/$(basename "$f" .cc).o"
    (
      extra=("${defs[@]}")
      case "$f" in "$gt"/*) extra=(-I"$gt" -I"$gt/include") ;; esac
      g++ "${flags[@]}" "${extra[@]}" -c "$f" -o "$o" >"$o.log" 2>&1
      echo $? >"$o.rc"
    ) &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  done
  wait
  cat "$dir"/*.o.log >"$log"
  local failed_lib=0 failed_test=0 lib_objs=() test_objs=()
  for f in "${GXX_TRAINER_SOURCES[@]}" trainer/src/main.cc; do
    o="$dir/$(basename "$f" .cc).o"
    [ "$(cat "$o.rc")" = 0 ] || failed_lib=1
    [ "$f" = trainer/src/main.cc ] || lib_objs+=("$o")
  done
  for f in "${GXX_TRAINER_TESTS[@]}" "$gt/src/gtest-all.cc" "$gt/src/gtest_main.cc"; do
    o="$dir/$(basename "$f" .cc).o"
    [ "$(cat "$o.rc")" = 0 ] || failed_test=1
    test_objs+=("$o")
  done
  rm -f "$dir/bin/isoflop-train" "$dir/bin/trainer_gpu_test"
  [ $failed_lib -eq 0 ] || return 1
  g++ "${lib_objs[@]}" "$dir/main.o" "${lflags[@]}" -o "$dir/bin/isoflop-train" >>"$log" 2>&1 || return 1
  [ $failed_test -eq 0 ] &&
    g++ "${lib_objs[@]}" "${test_objs[@]}" "${lflags[@]}" -o "$dir/bin/trainer_gpu_test" >>"$log" 2>&1
  return 0
}
