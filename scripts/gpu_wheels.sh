#!/usr/bin/env bash
# What the GPU machine (python 3.12, torch with CUDA, numpy and onnx already there, no network)
# needs from here for scripts/gpu_check.sh: the test dependencies as wheels in
# build/gpu-wheels, and the TensorRT headers (for the plugin tests' shim) in build/gpu-cache.
# Carry both with amx_export/plugins/lib. See docs/NOTES.md, "GPU checks".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf build/gpu-wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 -d build/gpu-wheels \
  pytest iniconfig pluggy packaging onnx-ir hypothesis sortedcontainers typing_extensions
rm -rf build/gpu-cache && mkdir -p build/gpu-cache
headers=$("$PY" -c "from amx_export.plugins.headers import tensorrt_include_dir as t; print(t())")
cp -r "$headers" build/gpu-cache/
# the small decoder of tests/native/test_cuda_ep_decoder.py (the GPU machine has no transformers)
mkdir -p build/gpu-cache/models
"$PY" -c "from amx_export.export import tiny_llama, export_causal_lm as e
e(tiny_llama(), 'build/gpu-cache/models/tiny-llama.onnx')"
# onnxruntime-gpu's CUDA provider, trimmed to sm_90 (about 60 MB: carry it in a call of its own)
"$PY" scripts/ort_gpu_bundle.py pack --sm "${GPU_SM:-90}"
du -sh build/gpu-wheels build/gpu-cache build/ort-gpu/*.tar.xz*
