#!/usr/bin/env bash
# An AMXFP4 model as a TensorRT engine with our plugins, checked against the PyTorch reference:
#   export -> quantize (TensorRT form) -> reference -> check in onnxruntime -> trtexec
#   -> polygraphy run --trt against the reference
#
#   samples/tensorrt/build_and_check.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR: a transformers checkpoint folder, or "smollm2" (default). Needs TensorRT >= 10.15
# (trtexec on PATH and its Python package; its ONNX parser imports nodes that carry a
# plugin_namespace attribute as plugins), polygraphy, a GPU, and libamx_trt.so
# (python -m amx_export build, with nvcc). Where any is missing it says which, and stops.
set -euo pipefail
MODEL=${1:-smollm2}
OUT=${2:-build/tensorrt}
PY=${PYTHON:-python}

missing() { echo "samples/tensorrt: cannot run here: $1" >&2; exit 2; }
command -v trtexec >/dev/null || missing "trtexec is not on PATH (install TensorRT >= 10.15)"
$PY -c "import tensorrt" 2>/dev/null || missing "the tensorrt Python package is not installed"
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || missing "no GPU (nvidia-smi)"
LIB=$($PY -c "from amx_export.plugins import library_path as p; print(p('trt'))") ||
  missing "libamx_trt.so is not built (python -m amx_export build, with nvcc on PATH)"
mkdir -p "$OUT"

echo "== 1. export $MODEL to ONNX (logits only: trtexec and polygraphy below feed input_ids)"
$PY -m amx_export export "$MODEL" --no-cache -o "$OUT/model.onnx"

echo "== 2. quantize to AMXFP4 W4A4, TensorRT form (int32-packed weights, plugin attributes)"
$PY -m amx_export "$OUT/model.onnx" --target tensorrt -o "$OUT/model.amx.onnx"

echo "== 3. the PyTorch reference on real text, as polygraphy RunResults"
$PY -m amx_export reference "$MODEL" --format amxfp4 -o "$OUT/ref.json"

echo "== 4. the same model in onnxruntime (our custom ops) against the reference"
$PY -m amx_export check "$OUT/model.amx.onnx" --reference "$OUT/ref.json" | tee "$OUT/check.txt"
# check's tolerance: half the reference's own mean distance from full precision
ATOL=$(sed -n 's/.*--atol \([0-9.e+-]*\).*/\1/p' "$OUT/check.txt" | tail -1)

echo "== 5. the TensorRT engine (the reference inputs are 16 feeds of 1 x 32 tokens)"
trtexec --onnx="$OUT/model.amx.onnx" --dynamicPlugins="$LIB" --saveEngine="$OUT/model.plan" \
  --minShapes=input_ids:1x1 --optShapes=input_ids:1x32 --maxShapes=input_ids:8x2048

echo "== 6. TensorRT against the reference (polygraphy; --plugins only dlopens: the library registers itself)"
polygraphy run "$OUT/model.amx.onnx" --trt --plugins "$LIB" \
  --trt-min-shapes input_ids:[1,1] --trt-opt-shapes input_ids:[1,32] \
  --trt-max-shapes input_ids:[8,2048] \
  --load-inputs "$OUT/ref.inputs.json" --load-outputs "$OUT/ref.json" \
  --check-error-stat mean --check-average --rtol 0 --atol "$ATOL"
