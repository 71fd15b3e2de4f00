#!/usr/bin/env bash
# A causal LM to a checked AMXFP4 ONNX model, what it costs in perplexity, and text from it:
#   export -> quantize -> reference -> check -> eval -> generate
#
#   samples/end_to_end.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR: a transformers checkpoint folder, or "smollm2" (default) for the SmolLM2-135M
# that scripts/setup.sh installs. PYTHON picks the interpreter (default: python).
# About 4 minutes for SmolLM2 on a quiet 2-core AMD EPYC VM (README, "Two commands"; 4 min
# 30 s in session 8 with other jobs running). Everything goes under OUT_DIR.
set -euo pipefail
MODEL=${1:-smollm2}
OUT=${2:-build/end_to_end}
PY=${PYTHON:-python}
mkdir -p "$OUT"

echo "== 1. export $MODEL to ONNX (a decoder with KV cache)"
$PY -m amx_export export "$MODEL" -o "$OUT/model.onnx"

echo "== 2. quantize: every linear layer to AMXFP4 W4A4 (amx.MatMul nodes)"
$PY -m amx_export "$OUT/model.onnx" -o "$OUT/model.amx.onnx"

echo "== 3. the PyTorch reference on real text, as polygraphy RunResults"
$PY -m amx_export reference "$MODEL" --format amxfp4 -o "$OUT/ref.json"

echo "== 4. check: onnxruntime against the reference (polygraphy Comparator)"
$PY -m amx_export check "$OUT/model.amx.onnx" --reference "$OUT/ref.json"

echo "== 5. perplexity: full precision vs MXFP4 vs AMXFP4, PyTorch and onnxruntime"
# 2k tokens keep this short; at that size the two runtimes' W4A4 rounding flips (README,
# "why the check is statistical") move perplexity by up to ~1%, and eval's default limit
# grows to match (3.5% at 2k tokens, 0.5% from 100k: the committed table, samples/smollm2/).
$PY -m amx_export eval "$MODEL" --onnx "$OUT/model.onnx" --formats fp,mxfp4,amxfp4 \
  --window 512 --max-tokens 2048 -o "$OUT/eval" --cache-dir "$OUT/eval-cache"

echo "== 6. generate: the AMXFP4 model continues a prompt through its KV cache, then fp32 does"
PROMPT="The three primary colors are"
$PY -m amx_export generate "$OUT/model.amx.onnx" --prompt "$PROMPT" --max-new-tokens 48
$PY -m amx_export generate "$OUT/model.onnx" --prompt "$PROMPT" --max-new-tokens 48
