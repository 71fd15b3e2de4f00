#!/usr/bin/env bash
# Every GPU check in one run, for the device machine (see docs/NOTES.md, "GPU checks"):
#   here:   ./scripts/gpu_wheels.sh (once) && python -m amx_export build
#   device: carry amx_export/plugins/lib and build/gpu-cache (and build/gpu-wheels if the
#           machine lacks pytest); run this
# Steps, each under its own time limit so that one hang costs only its step: the GPU tests,
# the benchmark, the GEMV variants' benchmark, compute-sanitizer memcheck and racecheck on a
# subset, Nsight Compute on the kernels of M in $PROFILE_ROWS (default 1 and 2048) and on
# each GEMV variant at M = 1 ($PROFILE_GEMV); the benchmarks' tables are printed last.
# Logs and tables land under ${OUT:-build/gpu-check}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
[ -d build/gpu-cache ] && export AMX_EXPORT_CACHE="$PWD/build/gpu-cache"  # TensorRT headers
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/device.txt"
# the test dependencies, from the carried wheels only where the machine lacks them
if ! "$PY" -c "import pytest, hypothesis, onnx_ir" 2>/dev/null && [ -d build/gpu-wheels ]; then
  "$PY" -m pip install -q --no-deps --no-index --target build/gpu-site build/gpu-wheels/*.whl
  export PYTHONPATH="$PWD/build/gpu-site:$PYTHONPATH"
fi
per_test=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=90")
pytest=("$PY" -m pytest -q -p no:cacheprovider -rfE $per_test)

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.txt, print its last lines
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.txt"
  echo "== $name: rc $rc"
}

# the CUDA kernels bit-exact and within bounds, the TensorRT plugins' enqueue, torch's CUDA
# path of the formats; AMX_REQUIRE_NATIVE: a missing library fails, not skips
AMX_REQUIRE_NATIVE=1 step tests 180 "${pytest[@]}" --durations=8 \
  tests/native/test_cuda_kernels.py tests/tensorrt/test_enqueue_gpu.py \
  tests/formats/test_properties.py -k "cuda or enqueue or Cuda"
# onnxruntime's CUDA execution provider with libamx_ort.so's CUDA kernels: onnxruntime-gpu
# from scripts/ort_gpu_bundle.py (carried in a call of its own: `unpack` leaves it in
# build/ort-gpu/site, which stays while the machine is warm)
if [ ! -d build/ort-gpu/site/onnxruntime ] && ls build/ort-gpu/onnxruntime-gpu-* >/dev/null 2>&1; then
  "$PY" scripts/ort_gpu_bundle.py unpack
fi
if [ -d build/ort-gpu/site/onnxruntime ]; then
  nvidia_libs=$("$PY" -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p)
    for r in site.getsitepackages() for p in glob.glob(r + '/nvidia/**/lib*.so*', recursive=True)})))")
  [ -f build/gpu-cache/models/tiny-llama.onnx ] &&
    export AMX_TINY_LLAMA_ONNX="$PWD/build/gpu-cache/models/tiny-llama.onnx"
  PYTHONPATH="$PWD/build/ort-gpu/site:$PYTHONPATH" LD_LIBRARY_PATH="$nvidia_libs:${LD_LIBRARY_PATH:-}" \
    AMX_REQUIRE_NATIVE=1 step cuda_ep 240 "${pytest[@]}" -rs tests/native/test_ort_ops.py \
    tests/native/test_cuda_ep_decoder.py -k "cuda"
fi
step bench 180 "$PY" benchmarks/cuda_matmul.py --repeat-seconds 0.25
# the GEMV variants A/B (plugins/cuda/gemv.cu), each against the same cuBLAS time, at the
# decode shapes of issue 15
step bench_gemv 180 "$PY" benchmarks/cuda_matmul.py --gemv-variants --rows 1 4 16 \
  --shapes 4096x4096 4096x11008 8192x8192 --repeat-seconds 0.15
if command -v compute-sanitizer >/dev/null; then
  some="33-float16-amxfp4 or 576-bfloat16-nvfp4 or w4a4-float16-amxfp4] or w4a16-float32-nvfp4]"
  some="$some or w4a16-float32-nvfp4-stream-fused]"  # the variants: cp.async ring, fused X
  step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 "${pytest[@]}" \
    tests/native/test_cuda_kernels.py -k "$some or batched"
  step racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 9 "${pytest[@]}" \
    tests/native/test_cuda_kernels.py -k "w4a4-bfloat16-amxfp4] or w4a4-bfloat16-amxfp4-stream]"
fi
if command -v ncu >/dev/null; then  # per-kernel time and throughput, at the card's own clocks
  for rows in ${PROFILE_ROWS:-1 2048}; do
    step "profile_m$rows" 120 ncu --clock-control none --csv --page details \
      --section SpeedOfLight --section Occupancy --launch-count 16 \
      --kernel-name regex:"gemv|gemm|operand|amax" \
      "$PY" benchmarks/cuda_matmul.py --dtype bfloat16 --mode w4a4 w4a16 \
      --rows "$rows" --repeat-seconds 0
    "$PY" scripts/ncu_summary.py "$OUT/profile_m$rows.txt"
  done
  # each GEMV variant at M = 1 (AMX_CUDA_GEMV picks it): its kernels, registers, occupancy
  for variant in ${PROFILE_GEMV:-baseline fused stream stream-fused}; do
    AMX_CUDA_GEMV=$variant step "profile_gemv_$variant" 90 ncu --clock-control none --csv \
      --page details --section SpeedOfLight --section Occupancy --section LaunchStats \
      --launch-count 8 --kernel-name regex:"gemv|operand|amax" \
      "$PY" benchmarks/cuda_matmul.py --dtype bfloat16 --mode w4a4 w4a16 --rows 1 \
      --shapes 4096x11008 --repeat-seconds 0
    "$PY" scripts/ncu_summary.py "$OUT/profile_gemv_$variant.txt"
  done
fi
grep -E "^(device|amx|\|)" "$OUT/bench.txt"
grep -E "^\|" "$OUT/bench_gemv.txt"
