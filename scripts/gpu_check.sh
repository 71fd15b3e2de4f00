#!/usr/bin/env bash
# Every GPU check in one run, for the device machine (see docs/NOTES.md, "GPU checks"):
#   here:   ./scripts/gpu_wheels.sh && python -m amx_export build
#   device: carry amx_export/plugins/lib, build/gpu-wheels and build/gpu-cache; run this
# Writes the test log and the benchmark tables under ${OUT:-build/gpu-check}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
[ -d build/gpu-cache ] && export AMX_EXPORT_CACHE="$PWD/build/gpu-cache"  # TensorRT headers
nvidia-smi -L | tee "$OUT/device.txt"
if [ -d build/gpu-wheels ]; then
  "$PY" -m pip install -q --no-deps --no-index --target build/gpu-site build/gpu-wheels/*.whl
  export PYTHONPATH="$PWD/build/gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# the GPU tests: CUDA kernels bit-exact and within bounds, the TensorRT plugins' enqueue,
# torch's CUDA path of the formats; AMX_REQUIRE_NATIVE: a missing library fails, not skips
AMX_REQUIRE_NATIVE=1 timeout 300 "$PY" -m pytest -q -p no:cacheprovider -x \
  tests/native/test_cuda_kernels.py tests/tensorrt/test_enqueue_gpu.py \
  tests/formats/test_properties.py -k "cuda or enqueue or Cuda" 2>&1 | tee "$OUT/tests.txt"
for args in "--dtype float16" "--dtype bfloat16" "--dtype float16 --weights-only"; do
  name=$(echo "$args" | tr -d ' -')
  # shellcheck disable=SC2086
  timeout 120 "$PY" benchmarks/cuda_matmul.py $args --repeat-seconds 0.3 2>&1 | tee "$OUT/bench_$name.md"
done
